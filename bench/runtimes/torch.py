"""torch (transformers): the reference runtime, for a student folder written by ``save_pretrained``.

It runs the float student an artifact was exported from (the manifest's provenance), so
accuracy figures can be compared with what the artifact does; it can also be benchmarked itself
(``edgedistill bench runs/kd3/student``) as the "before export" figure.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgedistill.bench.runtimes.base import Runtime, Session, Text, output_predictions
from edgedistill.numerics import mean_pool

_AUTO_CLASSES = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "feature-extraction": "AutoModel",
    "text-generation": "AutoModelForCausalLM",
}


class TorchSession(Session):
    def __init__(self, artifact: dict[str, Any], options: dict[str, Any]):
        super().__init__(artifact, options)
        import torch
        import transformers

        o = options["torch"]
        torch.set_num_threads(int(options["threads"]))
        try:
            torch.set_num_interop_threads(int(o.get("interop_threads") or 1))
        except RuntimeError:  # already set (only possible once per process)
            pass
        self.device = torch.device(o.get("device", "cpu"))
        cls = getattr(transformers, _AUTO_CLASSES[self.task])
        self.model = cls.from_pretrained(str(self.folder), use_safetensors=True, dtype=torch.float32).eval()
        self.model.to(self.device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder))
        params = inspect.signature(self.model.forward).parameters.values()
        self.input_names = [
            p.name
            for p in params
            if p.name in ("input_ids", "attention_mask", "token_type_ids")
            and (p.name != "token_type_ids" or "token_type_ids" in self.tokenizer.model_input_names)
        ]
        self._torch = torch
        self.effective = {
            "device": str(self.device),
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
        }
        self.runtime_info = {"torch": torch.__version__, "transformers": transformers.__version__}
        self.ran = "f32"  # loaded in float32 above

    def to_runtime_feed(self, feed: dict[str, np.ndarray]) -> Any:
        return {
            n: self._torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device) for n in self.input_names
        }

    def infer(self, feed: dict[str, Any]) -> Any:
        with self._torch.inference_mode():
            out = self.model(**feed)
        if self.device.type == "cuda":
            self._torch.cuda.synchronize()
        return out

    def outputs(self, feed: dict[str, Any]) -> dict[str, np.ndarray]:
        pooled = (
            "sentence_embedding" in self.extra_outputs
        )  # a generalist: its last hidden state, mean-pooled
        if pooled:
            with self._torch.inference_mode():
                out = self.model(**feed, output_hidden_states=True)
        else:
            out = self.infer(feed)
        names = ("logits",) if self.task != "feature-extraction" else ("last_hidden_state",)
        found = {n: getattr(out, n).float().cpu().numpy() for n in names}
        if pooled:
            mask = feed["attention_mask"].cpu().numpy()
            found["sentence_embedding"] = mean_pool(out.hidden_states[-1].float().cpu().numpy(), mask)
        return found

    def predict_outputs(self, texts: Sequence[Text], max_length: int) -> dict[str, np.ndarray]:
        pairs = [t if isinstance(t, tuple) else (t, None) for t in texts]
        first, second = [p[0] for p in pairs], [p[1] for p in pairs]
        batch = self.tokenizer(
            first,
            second if any(s is not None for s in second) else None,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        feed = {n: np.asarray(batch[n], dtype=np.int64) for n in batch if n in self.input_names}
        outputs = self.outputs(self.to_runtime_feed({**feed}))
        return output_predictions(self.task, outputs, np.asarray(batch["attention_mask"]), self.extra_outputs)

    supports_generate = False


class TorchRuntime(Runtime):
    name = "torch"
    formats = ("torch",)
    requires = (("torch", "all"), ("transformers", "all"))
    packages = ("torch", "transformers")

    def unavailable_reason(self, options: dict[str, Any], requires: str) -> str | None:
        device = str(options["torch"].get("device", "cpu"))
        if not device.startswith("cuda"):
            return None
        import torch

        if not torch.cuda.is_available():
            return f"torch {torch.__version__} sees no CUDA device (a CPU-only build, or no driver)"
        return None

    def load(self, artifact: dict[str, Any], options: dict[str, Any], workload: dict[str, Any]) -> Session:
        return TorchSession(artifact, options)
