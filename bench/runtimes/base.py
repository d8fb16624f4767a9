"""The runtime plugin interface, and the tokenizer every non-torch runtime shares.

A runtime has two faces:

- in the **parent** (the `edgedistill bench` process): `Runtime.unavailable_reason` says whether
  the hardware and providers a target asks for exist here (a target that cannot run is
  reported ``skipped``, never passed or failed);
- in the **measuring child** (`edgedistill.bench._worker`): `Runtime.load` opens the artifact
  and returns a `Session` that runs one inference (`infer`), predicts on text (`predict`) and,
  for decoders that can, generates (`generate`).

Options arrive as plain dicts (the target's ``runtime`` section, dumped, with ``threads`` and
``cpus`` resolved by the parent), so the child imports neither pydantic nor the target code.
Heavy imports belong inside methods, never at module top level.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgedistill.errors import ArtifactError
from edgedistill.io import read_json_object
from edgedistill.numerics import mean_pool

# Realistic English for fixed-length latency inputs (repeated as needed): token ids drawn from
# real text exercise the same embedding rows and attention patterns as an application's input.
WORKLOAD_TEXT = (
    "The film opens with a long, quiet shot of the harbour at dawn, and for a while nothing much "
    "happens: boats drift, gulls argue, a man repairs a net. Then the story finds its pace. The "
    "acting is warm and precise, the dialogue is sharp without showing off, and the last twenty "
    "minutes are as moving as anything released this year. Not every subplot works, and the music "
    "is sometimes too insistent, but the director trusts the audience and it pays off. "
)

Text = str | tuple[str, str]


class ArtifactTokenizer:
    """The artifact folder's own tokenizer (``tokenizer.json`` through `tokenizers`, no transformers).

    Falls back to transformers' AutoTokenizer when the folder has no ``tokenizer.json``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._hf = None
        self._tok = None
        # a damaged tokenizer_config.json is an error, not a silent pad id 0 (absent, it is optional)
        config_file = self.folder / "tokenizer_config.json"
        config = (
            read_json_object(config_file, "Export the artifact again.", ArtifactError)
            if config_file.is_file()
            else {}
        )
        if (self.folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            self._tok.no_padding()
            self._tok.no_truncation()
            pad_token = config.get("pad_token")
            if isinstance(pad_token, dict):
                pad_token = pad_token.get("content")
            pad_id = self._tok.token_to_id(pad_token) if pad_token else None
            self.pad_id = int(pad_id) if pad_id is not None else 0
        else:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(self.folder))
            self.pad_id = int(self._hf.pad_token_id or 0)

    def _encode(
        self, texts: Sequence[Text], max_length: int, special: bool = True
    ) -> list[tuple[list[int], list[int]]]:
        if self._tok is not None:
            self._tok.enable_truncation(max_length=max_length)
            try:
                encs = self._tok.encode_batch(list(texts), add_special_tokens=special)
            finally:
                self._tok.no_truncation()
            return [(list(e.ids), list(e.type_ids)) for e in encs]
        out = []
        for text in texts:
            pair = (text[0], text[1]) if isinstance(text, tuple) else (text, None)
            enc = self._hf(*pair, truncation=True, max_length=max_length, add_special_tokens=special)
            out.append(
                (list(enc["input_ids"]), list(enc.get("token_type_ids") or [0] * len(enc["input_ids"])))
            )
        return out

    def batch(self, texts: Sequence[Text], max_length: int) -> dict[str, np.ndarray]:
        """input_ids / attention_mask / token_type_ids, int64, padded to the longest row."""
        encoded = self._encode(texts, max_length)
        width = max(len(ids) for ids, _ in encoded)
        ids = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        types = np.zeros((len(encoded), width), dtype=np.int64)
        for row, (tok_ids, type_ids) in enumerate(encoded):
            ids[row, : len(tok_ids)] = tok_ids
            mask[row, : len(tok_ids)] = 1
            types[row, : len(type_ids)] = type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def fixed_length(self, length: int, batch_size: int) -> dict[str, np.ndarray]:
        """A [batch, length] feed of real text, no padding (every row exactly ``length`` tokens)."""
        text = WORKLOAD_TEXT
        while len(self._encode([text], 10**6, special=False)[0][0]) < length + batch_size * 7:
            text += WORKLOAD_TEXT
        words = text.split()
        rows = [" ".join(words[i * 7 :]) for i in range(batch_size)]  # each row starts elsewhere
        feed = self.batch(rows, length)
        if feed["input_ids"].shape[1] != length or not feed["attention_mask"].all():
            raise RuntimeError(f"could not build {length}-token rows from the workload text")
        return feed


# Artifacts whose numerics are defined by float arithmetic: `auto` runs them as they declare.
FLOAT_PRECISIONS = ("fp32", "fp16", "f32", "f16")


def resolve_policy(options: dict[str, Any], artifact: dict[str, Any]) -> str:
    """``artifact`` or ``native``: the target's ``precision_policy`` with ``auto`` resolved by precision."""
    policy = options.get("precision_policy") or "auto"
    if policy == "auto":
        return "artifact" if str(artifact.get("precision")) in FLOAT_PRECISIONS else "native"
    return policy


def task_prediction(task: str, outputs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Logits [n, classes] for classification, sentence embeddings [n, dim] for feature extraction."""
    if task == "sequence-classification":
        if "logits" in outputs:
            return np.asarray(outputs["logits"], dtype=np.float32)
        return np.asarray(next(iter(outputs.values())), dtype=np.float32)
    if "sentence_embedding" in outputs:
        return np.asarray(outputs["sentence_embedding"], dtype=np.float32)
    hidden = outputs.get("last_hidden_state", next(iter(outputs.values())))
    return mean_pool(np.asarray(hidden), mask)


def output_predictions(
    task: str, outputs: dict[str, np.ndarray], mask: np.ndarray, extra: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The task's prediction (``prediction``) and each named extra output as float32 (a generalist
    classifier's ``sentence_embedding``, pooled in its graph)."""
    found = {"prediction": task_prediction(task, outputs, mask)}
    for name in extra:
        if name not in outputs:
            raise RuntimeError(f"the artifact returned no {name!r} output (it returned {sorted(outputs)})")
        found[name] = np.asarray(outputs[name], dtype=np.float32)
    return found


class Session(ABC):
    """One artifact loaded in its runtime, inside the measuring process."""

    def __init__(self, artifact: dict[str, Any], options: dict[str, Any]):
        self.artifact = artifact
        self.options = options
        self.folder = Path(artifact["path"])
        self.task = artifact["task"]
        # what the runtime says it applied (threads, providers, device...), for the report
        self.effective: dict[str, Any] = {}
        self.runtime_info: dict[str, Any] = {}
        # the arithmetic that ran (``f32``, ``bf16``, ``f32+int8``...), where the runtime can tell
        # (`read_back`); otherwise the parent takes what export parity read back for the file
        self.ran: str | None = None
        self.precision_policy = resolve_policy(options, artifact)
        # outputs beside the task's that the accuracy job measures too (a generalist's sentence_embedding)
        self.extra_outputs: list[str] = list(artifact.get("extra_outputs") or [])

    def read_back(self) -> None:
        """Ask the runtime what it runs (after the timed session creation); fills ``ran``/``effective``."""
        return None

    # ------------------------------------------------------------------ latency
    def workload_feeds(self, workload: dict[str, Any]) -> list[tuple[str, Any]]:
        """(label, feed) per sequence length of the workload; built before any timing."""
        tokenizer = ArtifactTokenizer(self.folder)
        feeds = []
        for length in workload["sequence_lengths"]:
            feed = tokenizer.fixed_length(int(length), int(workload["batch_size"]))
            feeds.append((f"seq{length}", self.to_runtime_feed(feed)))
        return feeds

    def to_runtime_feed(self, feed: dict[str, np.ndarray]) -> Any:
        """Keep the inputs the model takes, in the dtypes it declares."""
        specs = self.artifact.get("inputs") or []
        if not specs:
            return feed
        out = {}
        for spec in specs:
            name = spec["name"]
            if name not in feed:
                raise RuntimeError(f"the model needs input {name!r}, which the tokenizer does not produce")
            out[name] = feed[name].astype(np.dtype(spec.get("dtype") or "int64"), copy=False)
        return out

    @abstractmethod
    def infer(self, feed: Any) -> Any:
        """One inference on a prepared feed (the timed call)."""

    # ------------------------------------------------------------------ accuracy
    def outputs(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named outputs for one tokenized batch (accuracy path)."""
        raise NotImplementedError

    def predict(self, texts: Sequence[Text], max_length: int) -> np.ndarray:
        """Logits (classification) or sentence embeddings (feature extraction) for a batch of texts."""
        return self.predict_outputs(texts, max_length)["prediction"]

    def predict_outputs(self, texts: Sequence[Text], max_length: int) -> dict[str, np.ndarray]:
        """`predict`'s ``prediction`` and the artifact's ``extra_outputs`` for a batch of texts (one run)."""
        if not hasattr(self, "_tokenizer"):
            self._tokenizer = ArtifactTokenizer(self.folder)
        batch = self._tokenizer.batch(texts, max_length)
        outputs = self.outputs(self.to_runtime_feed(batch))
        return output_predictions(self.task, outputs, batch["attention_mask"], self.extra_outputs)

    # ------------------------------------------------------------------ decoders
    supports_generate: ClassVar[bool] = False

    def prompt(self, n_tokens: int) -> Any:
        raise NotImplementedError

    def generate(self, prompt: Any, n_tokens: int) -> tuple[float, float]:
        """Greedy-generate ``n_tokens`` after ``prompt``: (seconds to first token, seconds in total)."""
        raise NotImplementedError

    def close(self) -> None:
        return None


class Runtime(ABC):
    """A runtime plugin: which artifact formats it runs, what it needs, how it loads them."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    # (importable module, pip extra) checked before anything runs
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    # distributions whose versions go into the report
    packages: ClassVar[tuple[str, ...]] = ()

    def unavailable_reason(self, options: dict[str, Any], requires: str) -> str | None:
        """Why this runtime cannot run the target here (hardware or provider absent), else None.

        Runs in the parent; the generic "no NVIDIA GPU" check has already passed for CUDA targets.
        """
        return None

    @abstractmethod
    def load(self, artifact: dict[str, Any], options: dict[str, Any], workload: dict[str, Any]) -> Session:
        """Open ``artifact`` with ``options`` for ``workload`` (child side); returns a ready session."""
