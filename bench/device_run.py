"""The bench's side of a device run: open the target's device, and prove parity of outputs on it.

`open_target_device` connects to the device a target names (``None`` for this host) and turns
an unreachable one into a skip reason for every artifact. `device_parity` runs the export parity
sentences through the artifact on the device and on this host (same runtime, same token ids) and
records how far the device's outputs are from this host's: max abs diff, mean and min cosine per
row, top-1 agreement (classification logits). That is how ARM64 kernels are shown to compute what
the x86 ones compute, under qemu-user or on a real board.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgedistill.bench.artifact import Artifact
from edgedistill.errors import EdgeDistillError

PARITY_TASKS = ("sequence-classification", "feature-extraction")


def open_target_device(target: Any, work_dir: Path) -> tuple[Any, str | None]:
    """(device object or None for this host, why it cannot be used or None)."""
    from edgedistill.bench.devices import open_device
    from edgedistill.bench.devices.base import DeviceUnavailable

    spec = target.device.model_dump()
    if spec["kind"] == "local":
        return None, None
    try:
        device = open_device(spec, work_dir / "device")
        device.open()
    except DeviceUnavailable as exc:
        return None, f"device {spec['kind']} unavailable: {exc}"
    return device, None


def compare_outputs(here, there, task: str) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(here, dtype=np.float64).reshape(len(here), -1)
    b = np.asarray(there, dtype=np.float64).reshape(len(there), -1)
    if a.shape != b.shape:
        return {
            "status": "error",
            "reason": f"device outputs have shape {list(b.shape)}, this host's {list(a.shape)}",
        }
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    out = {
        "status": "measured",
        "n": int(a.shape[0]),
        "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
        "mean_abs_diff": float(np.abs(a - b).mean()) if a.size else 0.0,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }
    if task == "sequence-classification":
        out["top1_agreement"] = float((a.argmax(axis=1) == b.argmax(axis=1)).mean())
    return out


def device_parity(plan: Any, artifact: Artifact, device: Any) -> dict[str, Any]:
    """Outputs of the parity sentences on the device against this host's (the x86 reference)."""
    import numpy as np

    from edgedistill.export.parity.inputs import BUILTIN_SENTENCES

    if not getattr(device, "can_predict", True):
        return {
            "status": "not measured",
            "reason": "the device runs a native benchmark binary (no Python): outputs are not read back",
        }
    if artifact.task not in PARITY_TASKS:
        return {
            "status": "not measured",
            "reason": f"device parity covers {', '.join(PARITY_TASKS)}, not {artifact.task}",
        }
    texts_file = plan.work_dir / "parity-texts.json"
    texts_file.write_text(json.dumps(list(BUILTIN_SENTENCES)), encoding="utf-8")
    job = plan.job("accuracy", artifact, texts_file=str(texts_file))
    try:
        there = plan.run(job)
        here = plan.run(job, local=True)
    except EdgeDistillError as exc:  # the latency figures stand; the parity run's failure is reported
        return {"status": "error", "reason": str(exc)}
    block = compare_outputs(
        np.load(here["predictions_file"]), np.load(there["predictions_file"]), artifact.task
    )
    block.update(
        sentences="export parity built-in sentences",
        reference="this host, same runtime and artifact",
        device_runtime=there.get("runtime_info"),
        host_runtime=here.get("runtime_info"),
        device_ran=there.get("ran"),
        host_ran=here.get("ran"),
    )
    return block
