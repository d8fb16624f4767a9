"""OpenVINO: ``openvino_model.xml`` IR compiled for the target's device with explicit threads and streams.

Latency settings follow what OpenVINO's own ``benchmark_app`` needs for a fair single-request
comparison (``-hint none -nstreams 1 -nthreads N -nireq 1 -api sync``): no performance hint
(OpenVINO refuses a hint together with explicit threads), ``NUM_STREAMS=1`` and
``INFERENCE_NUM_THREADS`` = the target's threads. The properties the compiled model reports back
are recorded, so a report shows what actually ran (e.g. bf16 on AMX CPUs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.bench.runtimes.base import Runtime, Session

XML_FILE = "openvino_model.xml"
_READ_BACK = (
    "EXECUTION_DEVICES",
    "PERFORMANCE_HINT",
    "NUM_STREAMS",
    "INFERENCE_NUM_THREADS",
    "INFERENCE_PRECISION_HINT",
    "ENABLE_CPU_PINNING",
    "ENABLE_HYPER_THREADING",
    "SCHEDULING_CORE_TYPE",
)


def compile_config(options: dict[str, Any]) -> dict[str, Any]:
    o = options["openvino"]
    config: dict[str, Any] = {}
    hint = o.get("performance_hint", "none")
    if hint != "none":
        config["PERFORMANCE_HINT"] = hint.upper()
    else:
        config["NUM_STREAMS"] = int(o.get("num_streams") or 1)
        config["INFERENCE_NUM_THREADS"] = int(o.get("inference_num_threads") or options["threads"])
    if o.get("device", "CPU").upper().startswith("CPU"):
        if o.get("inference_precision_hint"):
            config["INFERENCE_PRECISION_HINT"] = o["inference_precision_hint"]
        if o.get("enable_cpu_pinning") is not None:
            config["ENABLE_CPU_PINNING"] = bool(o["enable_cpu_pinning"])
    elif o.get("inference_precision_hint"):
        config["INFERENCE_PRECISION_HINT"] = o["inference_precision_hint"]
    config.update(o.get("config") or {})
    return config


class OVSession(Session):
    def __init__(self, artifact: dict[str, Any], options: dict[str, Any]):
        super().__init__(artifact, options)
        import openvino as ov

        device = options["openvino"].get("device", "CPU")
        config = compile_config(options)
        model = next((f for f in artifact.get("model_files", []) if f.endswith(".xml")), XML_FILE)
        core = ov.Core()
        self.compiled = core.compile_model(str(Path(artifact["path"]) / model), device, config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]
        effective: dict[str, Any] = {"device": device, "requested": {k: str(v) for k, v in config.items()}}
        for key in _READ_BACK:
            try:
                effective[key] = str(self.compiled.get_property(key))
            except RuntimeError:
                continue
        self.effective = effective
        info: dict[str, Any] = {"openvino": ov.get_version()}
        try:
            info["device_name"] = core.get_property(device.split(".")[0], "FULL_DEVICE_NAME")
            info["optimization_capabilities"] = list(
                core.get_property(device.split(".")[0], "OPTIMIZATION_CAPABILITIES")
            )
        except RuntimeError:
            pass
        self.runtime_info = info

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
