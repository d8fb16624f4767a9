"""ExecuTorch: ``model.pte`` artifacts (XNNPACK delegate) in ``executorch.runtime`` on the host CPU.

The positional input order comes from the artifact's ``executorch_io.json`` (what export wrote
and parity ran). XNNPACK's thread pool is sized to the target's ``threads`` (the pybindings'
``_unsafe_reset_threadpool``; safe here: the measuring process runs one method at a time) and
the count it then reports is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.bench.runtimes.base import Runtime, Session

IO_FILE = "executorch_io.json"


class ExecuTorchSession(Session):
    def __init__(self, artifact: dict[str, Any], options: dict[str, Any]):
        super().__init__(artifact, options)
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime as EtRuntime

        threads = int(options["threads"])
        portable_lib._unsafe_reset_threadpool(threads)
        io_spec = json.loads((self.folder / IO_FILE).read_text(encoding="utf-8"))
        self.input_names = list(io_spec["inputs"])
        self.output_name = str(io_spec["output"])
        model = next((f for f in artifact.get("model_files", []) if f.endswith(".pte")), "model.pte")
        self.method = EtRuntime.get().load_program(str(Path(self.folder) / model)).load_method("forward")
        self._torch = torch
        self.effective = {
            "threads_requested": threads,
            "xnnpack_threadpool_threads": int(portable_lib._threadpool_get_thread_count()),
            "backend": "XNNPACK",
        }
        from importlib import metadata

        self.runtime_info = {"executorch": metadata.version("executorch")}
        self.ran = io_spec.get("ran")

    def to_runtime_feed(self, feed: dict[str, np.ndarray]) -> Any:
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise RuntimeError(f"the .pte needs inputs {missing}, which the tokenizer does not produce")
        return [
            self._torch.from_numpy(np.ascontiguousarray(feed[n], dtype=np.int64)) for n in self.input_names
        ]

    def infer(self, feed: Any) -> Any:
        return self.method.execute(feed)

    def outputs(self, feed: Any) -> dict[str, np.ndarray]:
        return {self.output_name: self.method.execute(feed)[0].numpy()}


class ExecuTorchRuntime(Runtime):
    name = "executorch"
    formats = ("executorch",)
    requires = (("executorch", "executorch"),)
    packages = ("executorch", "torchao")

    def load(self, artifact: dict[str, Any], options: dict[str, Any], workload: dict[str, Any]) -> Session:
        return ExecuTorchSession(artifact, options)
