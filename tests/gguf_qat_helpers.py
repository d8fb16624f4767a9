"""What the GGUF-aware QAT tests share: the exported q4_0 file holds exactly the trained weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from edgedistill.compress.gguf_quant import fake_quant_blocks


def assert_q4_0_export_holds_trained_weights(student: Path, out: Path, hf_key: str) -> None:
    """Export ``student`` (a GGUF q4_0 QAT student folder) to GGUF q4_0 in ``out``; its latent weights
    are plain transformers keys, the manifest notes the QAT, and ``blk.0.ffn_down.weight`` decodes to
    the fake-quant of ``hf_key`` bit for bit."""
    import gguf

    from edgedistill.export import ExportConfig, export

    weights = load_file(student / "model.safetensors")
    assert not any("parametrizations" in k for k in weights)  # latent weights, plain transformers keys
    exported = export(student, out, ExportConfig(formats=["gguf"], precisions=["q4_0"]))
    (artifact,) = exported["artifacts"]
    manifest = json.loads((Path(artifact["path"]) / "manifest.json").read_text())
    assert any("GGUF-aware QAT at q4_0" in n for n in manifest.get("notes", [])), manifest.get("notes")
    # parity held llama.cpp to the fake-quant student, with the qat-exact bounds, not q4_0's generic ones
    parity = manifest["parity"]
    assert parity["reference"] == "gguf-qat" and parity["tolerance_name"] == "qat-exact", parity
    assert parity["tolerance"] == ExportConfig().tolerance("qat-exact").model_dump(), parity["tolerance"]
    print("\nGGUF q4_0 QAT export vs its fake-quant student:", [
        {k: o[k] for k in ("name", "max_abs_diff", "mean_abs_diff", "max_rel_diff", "top1_agreement", "cosine_min")}
        for o in parity["outputs"]
    ])  # fmt: skip
    reader = gguf.GGUFReader(next(Path(artifact["path"]).glob("*.gguf")))
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    decoded = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(weights[hf_key].shape)
    assert tensor.tensor_type.name == "Q4_0"
    assert torch.equal(torch.from_numpy(decoded.copy()), fake_quant_blocks(weights[hf_key].float(), "q4_0"))
