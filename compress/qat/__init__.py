"""NNCF int8 quantization-aware training (QAT) helpers: insert fake-quant, describe it, save and restore it.

The distillation trainer uses these in its quantization-aware phase::

    ensure_nncf_extensions()                       # never hang on NNCF's C++ kernel build
    student = insert_fake_quant(student, batches)  # a NEW model object (NNCF deep-copies)
    ... train student ...
    save_qat_state(student, out / "qat")           # nncf_config.json + qat_state.safetensors
    plain = float_state_dict(student)              # same keys as the transformers model

Weight-only QAT for OpenVINO (``qat.mode ov_int8_wo`` / ``ov_int4_wo``, section 5) uses NNCF's
FQ_LORA format instead: ``insert_weight_only_fake_quant`` (prepare), the same save/load, and
``compressed_weight_model`` (convert: integer codes + decompression, for the OpenVINO export).

``nncf`` is imported inside the functions only: importing this module never imports it.

Where things are:

- `nncf_runtime`: the lazy NNCF import, `ensure_nncf_extensions`, `fake_quant_backend`, NNCF's hooks.
- `int8`: `insert_fake_quant` (int8 QAT, ranges learned in training).
- `report`: `qat_summary`, which ops are quantized and why the others are not.
- `state`: `save_qat_state`, `load_qat_model`, `float_state_dict`.
- `weight_only`: weight-only int8/int4 QAT for OpenVINO, `compressed_weight_model`.
"""

from __future__ import annotations

from edgedistill.compress.qat.int8 import PRESETS, insert_fake_quant
from edgedistill.compress.qat.nncf_runtime import (
    HOOK_STORAGE_NAME,
    QATError,
    _hooks,
    _is_hook_key,
    ensure_nncf_extensions,
    fake_quant_backend,
)
from edgedistill.compress.qat.report import qat_summary
from edgedistill.compress.qat.state import (
    CONFIG_FILE,
    STATE_FILE,
    STATE_FORMAT,
    float_state_dict,
    load_qat_model,
    save_qat_state,
)
from edgedistill.compress.qat.weight_only import (
    WEIGHT_ONLY_MODES,
    WEIGHT_ONLY_SCHEME,
    compressed_weight_model,
    insert_weight_only_fake_quant,
    merged_float_state_dict,
    train_weight_only,
    weight_only_summary,
)

__all__ = [
    "CONFIG_FILE",
    "HOOK_STORAGE_NAME",
    "PRESETS",
    "STATE_FILE",
    "STATE_FORMAT",
    "WEIGHT_ONLY_MODES",
    "WEIGHT_ONLY_SCHEME",
    "QATError",
    "_hooks",
    "_is_hook_key",
    "compressed_weight_model",
    "ensure_nncf_extensions",
    "fake_quant_backend",
    "float_state_dict",
    "insert_fake_quant",
    "insert_weight_only_fake_quant",
    "load_qat_model",
    "merged_float_state_dict",
    "qat_summary",
    "save_qat_state",
    "train_weight_only",
    "weight_only_summary",
]
