"""QAT checkpoints: save the learned quantizer state beside the float weights, load it back onto a float model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from edgedistill.compress.qat.nncf_runtime import (
    HOOK_STORAGE_NAME,
    QATError,
    _hooks,
    _import_nncf,
    _is_hook_key,
)
from edgedistill.errors import ModelLoadError
from edgedistill.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)


CONFIG_FILE = "nncf_config.json"


STATE_FILE = "qat_state.safetensors"


STATE_FORMAT = "edgedistill-qat-state/1"


# 4. save / load / float weights


def save_qat_state(qmodel: torch.nn.Module, folder: str | Path) -> None:
    """Write ``folder/nncf_config.json`` (``nncf.torch.get_config``) and ``folder/qat_state.safetensors``.

    The state is the full ``state_dict`` (float weights and quantizer parameters, keys
    ``__nncf_hooks.{pre,post}_hooks.<op>__<port>.<id>.<scale|input_low|input_range|...>``),
    each tensor cloned to CPU so tied/shared tensors save. Each file is written atomically.
    """
    nncf = _import_nncf("Saving a quantization-aware model")
    from safetensors.torch import save_file

    if not _hooks(qmodel):
        raise QATError("save_qat_state: the model has no NNCF fake-quant (call insert_fake_quant first)")
    config = nncf.torch.get_config(qmodel)
    json.dumps(config)  # fail before writing anything if NNCF ever returns something non-JSON
    # clone: tied weights share storage, which safetensors refuses; also detaches and makes contiguous
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in qmodel.state_dict().items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file(
            state, str(tmp), metadata={"format": "pt", "edgedistill": STATE_FORMAT, "nncf": nncf.__version__}
        )
    atomic_write_json(folder / CONFIG_FILE, config)


def load_qat_model(float_model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """Rebuild the quantized model saved by ``save_qat_state`` on top of ``float_model``, exactly.

    In place: ``nncf.torch.load_from_config`` wraps ``float_model`` itself, and the returned
    object IS ``float_model`` (now with quantizers). On a load failure its quantizers are removed
    again and a ``ModelLoadError`` naming the folder is raised.
    """
    nncf = _import_nncf("Loading a quantization-aware model")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, state_path = folder / CONFIG_FILE, folder / STATE_FILE
    missing = [p.name for p in (config_path, state_path) if not p.is_file()]
    if missing:
        raise ModelLoadError(
            f"{folder}: not a complete QAT state folder, missing {', '.join(missing)} "
            f"(save_qat_state writes {CONFIG_FILE} and {STATE_FILE}). Point at the 'qat' folder of a run, "
            "or re-run the quantization-aware phase."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{config_path}: cannot read the NNCF config ({exc}); the file is corrupted."
        ) from exc
    if not isinstance(config, dict) or not isinstance(config.get("compression_state"), list):
        raise ModelLoadError(
            f"{config_path}: not an NNCF config (no 'compression_state' list); the file is corrupted."
        )
    device = next((p.device for p in float_model.parameters()), torch.device("cpu"))
    try:
        state = load_file(str(state_path), device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"{state_path}: cannot read the QAT state ({exc}); the file is corrupted."
        ) from exc
    if _hooks(float_model):
        raise QATError("load_qat_model: the model already has NNCF fake-quant; pass a fresh float model")

    try:
        qmodel = nncf.torch.load_from_config(float_model, config)
    except Exception as exc:  # NNCF raises InternalError/KeyError/TypeError for configs it cannot apply
        _clear_hooks(float_model)
        raise ModelLoadError(f"{config_path}: NNCF cannot rebuild the quantizers from it: {exc}") from exc
    _match_saved_dtypes(qmodel, state)
    try:
        qmodel.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        _clear_hooks(qmodel)
        raise ModelLoadError(
            f"{folder}: the saved QAT state does not fit this model (saved from another architecture or "
            f"size?): {str(exc)[:2000]}"
        ) from exc
    return qmodel


def _match_saved_dtypes(qmodel: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give NNCF's own parameters the dtype they were saved with before loading them.

    ``load_state_dict`` copies into the existing tensors and casts silently: LoRA adapters that
    NNCF rebuilds in bfloat16 would lose the float32 values training left in them.
    """
    for name, module in _hooks(qmodel):
        for attr, param in list(module.named_parameters(recurse=False)):
            saved = state.get(f"{HOOK_STORAGE_NAME}.{name}.{attr}")
            if saved is not None and saved.dtype != param.dtype and saved.is_floating_point():
                setattr(
                    module,
                    attr,
                    torch.nn.Parameter(param.detach().to(saved.dtype), requires_grad=param.requires_grad),
                )


def _clear_hooks(model: torch.nn.Module) -> None:
    from nncf.torch.function_hook.hook_storage import HookStorage

    if HOOK_STORAGE_NAME in model._modules:
        model._modules[HOOK_STORAGE_NAME] = HookStorage()  # the wrapper runs the plain forward again


def float_state_dict(qmodel: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's own (learned float) weights, keyed exactly as the original transformers model.

    Drops NNCF's quantizer entries; tensors share storage with ``qmodel`` like ``state_dict()``.
    Refuses models whose NNCF hooks are not plain quantizers (e.g. SmoothQuant's multipliers),
    because then the float weights alone do not reproduce the float model.
    """
    foreign = [name for name, module in _hooks(qmodel) if "Quantizer" not in type(module).__name__]
    if foreign:
        raise QATError(
            "float_state_dict: the model holds NNCF hooks that change the float computation "
            f"({', '.join(foreign[:3])}...); its weights alone are not a plain transformers model."
        )
    return {k: v for k, v in qmodel.state_dict().items() if not _is_hook_key(k)}
