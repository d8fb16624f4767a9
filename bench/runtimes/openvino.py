"""OpenVINO: ``openvino_model.xml`` IR compiled for the target's device with explicit threads and streams.

Latency settings follow what OpenVINO's own ``benchmark_app`` needs for a fair single-request
comparison (``-hint none -nstreams 1 -nthreads N -nireq 1 -api sync``): no performance hint
(OpenVINO refuses a hint together with explicit threads), ``NUM_STREAMS=1`` and
``INFERENCE_NUM_THREADS`` = the target's threads. ``runtime.precision_policy`` decides the
arithmetic: ``artifact`` compiles with the properties the manifest's ``load`` names (f32, no
dynamic quantization of activations), ``native`` with OpenVINO's defaults (bf16 on AVX-512
BF16/AMX CPUs). The properties the compiled model reports back and the precision of its
execution graph's layers are recorded, and ``ran`` labels every row with what actually ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill import numerics
from edgedistill.bench.runtimes.base import Runtime, Session, resolve_policy

XML_FILE = "openvino_model.xml"


def compile_config(options: dict[str, Any], artifact: dict[str, Any] | None = None) -> dict[str, Any]:
    """compile_model properties: the precision policy's, then the target's explicit settings on top."""
    o = options["openvino"]
    config: dict[str, Any] = {}
    on_cpu = o.get("device", "CPU").upper().startswith("CPU")
    if on_cpu and artifact is not None and resolve_policy(options, artifact) == "artifact":
        # the manifest's properties, but only the numerics keys edgedistill writes: a manifest
        # from elsewhere cannot set other compile properties through this door
        stored = (artifact.get("load") or {}).get("compile_properties")
        stored = stored if isinstance(stored, dict) else {}
        config.update({k: str(stored.get(k, v)) for k, v in numerics.OPENVINO_FILE_PROPERTIES.items()})
    hint = o.get("performance_hint", "none")
    if hint != "none":
        config["PERFORMANCE_HINT"] = hint.upper()
    else:
        config["NUM_STREAMS"] = int(o.get("num_streams") or 1)
        config["INFERENCE_NUM_THREADS"] = int(o.get("inference_num_threads") or options["threads"])
    if o.get("inference_precision_hint"):
        config["INFERENCE_PRECISION_HINT"] = o["inference_precision_hint"]
    if on_cpu and o.get("enable_cpu_pinning") is not None:
        config["ENABLE_CPU_PINNING"] = bool(o["enable_cpu_pinning"])
    config.update(o.get("config") or {})
    return config


class OVSession(Session):
    def __init__(self, artifact: dict[str, Any], options: dict[str, Any]):
        super().__init__(artifact, options)
        import openvino as ov

        device = options["openvino"].get("device", "CPU")
        config = compile_config(options, artifact)
        model = next((f for f in artifact.get("model_files", []) if f.endswith(".xml")), XML_FILE)
        core = ov.Core()
        self.compiled = core.compile_model(str(Path(artifact["path"]) / model), device, config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]
        self.effective = {"device": device, "requested": {k: str(v) for k, v in config.items()}}
        info: dict[str, Any] = {"openvino": ov.get_version()}
        try:
            info["device_name"] = core.get_property(device.split(".")[0], "FULL_DEVICE_NAME")
            info["optimization_capabilities"] = list(
                core.get_property(device.split(".")[0], "OPTIMIZATION_CAPABILITIES")
            )
        except RuntimeError:
            pass
        self.runtime_info = info

    def read_back(self) -> None:
        read_back = numerics.openvino_read_back(self.compiled)
        self.ran = numerics.openvino_ran(read_back)
        self.effective.update(read_back["properties"])
        self.effective["execution_graph"] = {k: v for k, v in read_back.items() if k != "properties"}

    def infer(self, feed: dict[str, np.ndarray]) -> Any:
        return self.request.infer(feed, share_inputs=True, share_outputs=True)

    def outputs(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer(feed)
        return {port.get_any_name(): np.array(result[port]) for port in self.compiled.outputs}


class OpenVINORuntime(Runtime):
    name = "openvino"
    formats = ("openvino",)
    requires = (("openvino", "openvino"),)
    packages = ("openvino",)

    def unavailable_reason(self, options: dict[str, Any], requires: str) -> str | None:
        import openvino as ov

        device = options["openvino"].get("device", "CPU")
        available = ov.Core().available_devices
        base = device.split(".")[0]
        if device in available or ("." not in device and any(d.split(".")[0] == base for d in available)):
            return None
        return (
            f"OpenVINO {ov.get_version()} sees devices {', '.join(available) or '(none)'}, not {device}"
            + (
                " (OpenVINO's GPU device is an Intel GPU; NVIDIA GPUs are not OpenVINO devices)"
                if base == "GPU"
                else ""
            )
        )

    def load(self, artifact: dict[str, Any], options: dict[str, Any], workload: dict[str, Any]) -> Session:
        return OVSession(artifact, options)
