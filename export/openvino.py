"""OpenVINO IR export: ``openvino.convert_model`` straight from torch (or from the NNCF QAT model).

- fp32: saved with ``compress_to_fp16=False`` (OpenVINO's default save casts weights to fp16).
- fp16: weights stored as fp16 (the CPU plugin still computes in f32 on AVX2, bf16 on AMX).
- int8 from a QAT student: the fake-quant model converts to FakeQuantize ops with the learned
  ranges, int8 weights stored as int8. From a float student: ``nncf.quantize`` post-training on
  calibration sentences (``--calib-data``, else a built-in list), or weight-only
  ``nncf.compress_weights`` with ``int8_method=dynamic``.
- int4: weight-only ``nncf.compress_weights`` (INT4_SYM, group size 128 where rows allow).
- int8 / int4 from a weight-only QAT student (``qat.mode ov_int8_wo`` / ``ov_int4_wo``, NNCF
  FQ_LORA): the LoRA adapters are absorbed and the trained integer codes stored as u8/u4
  constants with float32 scales and zero points, so the IR computes what the fake-quant student
  computed (``compress.qat.compressed_weight_model``); parity is against that fake-quant model.
- decoders (text-generation) are traced with a 4-D causal mask computed in the graph
  (``core.causal_additive_mask``): transformers' own mask builder cannot be traced here.

Parity runs the IR in ``openvino.Core`` compiled for CPU with `numerics.OPENVINO_FILE_PROPERTIES`
(f32, no dynamic int8 quantization of activations), so the check measures the file, not a kernel
choice of the machine that runs the check; then once more with OpenVINO's defaults (bf16 on
AVX-512 BF16/AMX CPUs), the as-deployed figures. The IR stores ``DYNAMIC_QUANTIZATION_GROUP_SIZE=0``
in its ``rt_info``; the precision hint cannot be stored, so the manifest's ``load`` says to pass it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill import numerics
from edgedistill.export.config import QAT_EXACT
from edgedistill.export.core import (
    ArtifactResult,
    ExportError,
    FormatPlugin,
    RuntimeRun,
    StudentInfo,
    TensorSpec,
    clip_narrow_range_on_export,
    example_batch,
    int8_method,
    model_input_names,
    traceable,
)
from edgedistill.export.tracing import output_names

if TYPE_CHECKING:
    from edgedistill.export.config import ExportConfig

log = logging.getLogger(__name__)

XML_FILE = "openvino_model.xml"
BIN_FILE = "openvino_model.bin"


def convert(model, student: StudentInfo):
    """Torch model (float or NNCF fake-quant) -> ``openvino.Model`` with tokenizer-named inputs."""
    import openvino as ov

    tokenizer = student.load_tokenizer()
    names = model_input_names(model, tokenizer)
    example = example_batch(student, tokenizer, names)
    outputs = output_names(student)
    module = traceable(model, student.task, names, outputs=outputs)
    try:
        ov_model = ov.convert_model(module, example_input=tuple(example.values()))
    except Exception as exc:  # the PyTorch frontend raises several exception types
        raise ExportError(f"openvino.convert_model failed for {student.model_type}: {exc}") from exc
    for port, name in zip(ov_model.inputs, names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, outputs, strict=True):  # the traced tuple's order
        port.get_tensor().set_names({name})
    # free dimensions get readable names, as in the ONNX artifacts
    return ov_model


def float_model(student: StudentInfo):
    """The float IR of the student, converted once per export and cloned for each precision."""
    key = "openvino.float_model"
    if key not in student.cache:
        student.cache[key] = convert(student.load_model(), student)
    return student.cache[key].clone()


def _spec(port) -> TensorSpec:
    shape: list[int | str] = []
    for i, dim in enumerate(port.get_partial_shape()):
        shape.append(dim.get_length() if dim.is_static else ("batch_size", "sequence_length")[min(i, 1)])
    dtype = np.dtype(port.get_element_type().to_dtype()).name
    return TensorSpec(port.get_any_name(), dtype, shape)


def _int4_group_size(ov_model) -> int:
    """128 when every weight row splits into groups of 128, else per-channel (-1)."""
    sizes = []
    for op in ov_model.get_ops():
        if op.get_type_name() == "MatMul":
            for port in op.inputs():
                source = port.get_source_output().get_node()
                if source.get_type_name() == "Constant":
                    shape = list(port.get_partial_shape().to_shape())
                    if len(shape) == 2:
                        sizes.append(shape[-1])
    return 128 if sizes and all(s % 128 == 0 for s in sizes) else -1


def _count_ops(ov_model, kinds: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ov_model.get_ops():
        kind = op.get_type_name()
        if kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def _low_bit_constants(ov_model) -> int:
    """Constants stored in 8 or 4 bits (quantized weights) in the IR."""
    import openvino as ov

    kinds = (ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4)
    return sum(
        1
        for op in ov_model.get_ops()
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) in kinds
    )


class OpenVINOPlugin(FormatPlugin):
    name = "openvino"
    precisions = ("fp32", "fp16", "int8", "int4")
    tasks = ("sequence-classification", "feature-extraction", "text-generation")
    requires = (("openvino", "openvino"), ("nncf", "openvino"))
    several_outputs = True  # a generalist's logits and sentence_embedding in one graph
    tool_packages = ("openvino", "nncf")
    deployed_defaults_differ = True  # bf16 on AVX-512 BF16/AMX CPUs, dynamic int8 activations on VNNI

    def export(
        self, student: StudentInfo, precision: str, tmp_dir: Path, cfg: ExportConfig
    ) -> ArtifactResult:
        import openvino as ov

        reference, tolerance = "float", None
        notes: list[str] = []
        quantization: dict[str, Any] = {"method": "none"}
        compress_to_fp16 = precision == "fp16"
        trained_for = student.weight_only_qat_precision
        if trained_for is not None and precision == trained_for:
            ov_model, quantization = self._weight_only_qat(student)
            # the IR holds the trained integer codes: held to the fake-quant student exactly
            reference, tolerance = "qat", QAT_EXACT
        elif precision == "int8":
            # decoders: weight-only int8 by default (activations of LLMs have outliers PTQ clips)
            method = int8_method(
                student, cfg, default_without_qat="dynamic" if student.task == "text-generation" else "static"
            )
            if method == "qat":
                qmodel = student.load_qat_model()
                clipped = clip_narrow_range_on_export(qmodel)
                ov_model = convert(qmodel, student)
                reference = "qat"
                quantization = {
                    "method": "qat",
                    "description": "NNCF quantization-aware ranges as FakeQuantize ops (no recalibration)",
                    "narrow_range_quantizers_clipped_on_export": clipped,
                }
            else:
                ov_model = float_model(student)
                ov_model, quantization = self._post_training_int8(ov_model, method, student, cfg)
                if student.has_qat:
                    notes.append(
                        f"post-training quantization of a QAT student's float weights (int8_method={method}): "
                        f"the learned ranges are not used"
                    )
        elif precision == "int4":
            import nncf

            ov_model = float_model(student)
            group_size = _int4_group_size(ov_model)
            ov_model = nncf.compress_weights(
                ov_model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=group_size, ratio=1.0
            )
            quantization = {
                "method": "weight-only",
                "description": "nncf.compress_weights INT4_SYM (activations stay float)",
                "group_size": group_size,
            }
            if student.task != "text-generation":
                notes.append(
                    "int4 weight-only compression is meant for decoders; encoders lose more accuracy"
                )
        else:
            ov_model = float_model(student)
        if trained_for is not None and precision != trained_for and precision in ("int8", "int4"):
            notes.append(
                f"the student was trained for OpenVINO {trained_for} weight-only, this artifact is {precision}: "
                "a post-training compression of its latent float weights (W + LoRA)"
            )
        quantization["dtype_on_disk"] = (
            "float16"
            if compress_to_fp16
            else "float32 (int4 where quantized, int8 for weights kept at 8 bits)"
            if precision == "int4"
            else "float32 (int8 where quantized)"
        )
        quantization["fake_quantize_ops"] = _count_ops(ov_model, ("FakeQuantize",)).get("FakeQuantize", 0)
        quantization["low_bit_weight_constants"] = _low_bit_constants(ov_model)
        # the settings parity verifies that an IR can carry itself (an app passing nothing gets them)
        numerics.openvino_ir_rt_info(ov_model)
        ov.save_model(ov_model, tmp_dir / XML_FILE, compress_to_fp16=compress_to_fp16)
        return ArtifactResult(
            files=[XML_FILE, BIN_FILE],
            inputs=[_spec(p) for p in ov_model.inputs],
            outputs=[_spec(p) for p in ov_model.outputs],
            reference=reference,
            tolerance=tolerance,
            quantization=quantization,
            notes=notes,
        )

    def _weight_only_qat(self, student: StudentInfo):
        """The weight-only QAT student (NNCF FQ_LORA) as an IR holding exactly its trained int4/int8 weights."""
        from edgedistill.compress import qat as qat_lib

        qmodel = student.load_qat_model()
        summary = qat_lib.weight_only_summary(qmodel)
        compressed, converted = qat_lib.compressed_weight_model(qmodel, student.load_model())
        ov_model = convert(compressed, student)
        precision = student.weight_only_qat_precision
        return ov_model, {
            "method": "qat",
            "scheme": "weight-only",
            "weights": f"{precision} asymmetric (per-weight bits: {converted['weights']})",
            # OpenVINO would quantize them to int8 at run time on VNNI/AMX CPUs; the IR's rt_info
            # (DYNAMIC_QUANTIZATION_GROUP_SIZE=0) keeps them float, parity's read-back shows what ran
            "activations": "float32",
            "description": (
                f"NNCF weight-only {precision} QAT with absorbable LoRA adapters (FQ_LORA): adapters absorbed, "
                "weights stored as the trained integer codes with float32 scales and zero points (no recalibration)"
            ),
            "group_sizes": summary["group_sizes"],
            "lora_rank": summary["lora_rank"],
            "scale_dtype": converted["scale_dtype"],
        }

    def _post_training_int8(self, ov_model, method: str, student: StudentInfo, cfg: ExportConfig):
        import nncf

        if method == "dynamic":
            compressed = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
            return compressed, {
                "method": "weight-only",
                "description": "nncf.compress_weights INT8_ASYM: int8 weights, float activations",
            }
        from edgedistill.export.parity import calibration_feeds

        feeds, source = calibration_feeds(student, cfg)
        names = {p.get_any_name() for p in ov_model.inputs}
        dataset = nncf.Dataset([{k: v for k, v in f.items() if k in names} for f in feeds])
        quantized = nncf.quantize(
            ov_model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds)
        )
        return quantized, {
            "method": "static",
            "description": "nncf.quantize post-training (OpenVINO backend, transformer preset)",
            "calibration": source,
            "calibration_samples": len(feeds),
        }

    def execute(
        self, artifact_dir: Path, inputs: list[dict[str, np.ndarray]], deployed: bool = False
    ) -> RuntimeRun:
        import openvino as ov

        properties = {} if deployed else dict(numerics.OPENVINO_FILE_PROPERTIES)
        core = ov.Core()
        try:
            compiled = core.compile_model(str(artifact_dir / XML_FILE), "CPU", properties)
        except RuntimeError as exc:
            raise ExportError(f"OpenVINO cannot compile the exported IR: {exc}") from exc
        names = [p.get_any_name() for p in compiled.inputs]
        request = compiled.create_infer_request()
        results = []
        for feed in inputs:
            missing = [n for n in names if n not in feed]
            if missing:
                raise ExportError(f"the OpenVINO model needs inputs {missing} the tokenizer does not produce")
            values = request.infer({n: feed[n] for n in names})
            results.append({port.get_any_name(): np.array(values[port]) for port in compiled.outputs})
        read_back = numerics.openvino_read_back(compiled)
        read_back["openvino"] = ov.get_version()
        return RuntimeRun(
            outputs=results,
            settings={
                "runtime": "openvino",
                "device": "CPU",
                "compile_properties": properties or "none (OpenVINO's defaults and the IR's rt_info)",
            },
            read_back=read_back,
            ran=numerics.openvino_ran(read_back),
        )

    def load_instructions(self, result: ArtifactResult) -> dict[str, Any]:
        return numerics.openvino_load_instructions(XML_FILE)
