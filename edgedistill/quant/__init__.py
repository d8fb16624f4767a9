"""Quantization rules that training and export share, owned by neither (the ground under both).

- `gguf_types`: GGUF precisions, their aliases and block sizes, and the lazy ``gguf`` import.
- `gguf_arch`: which HF architectures GGUF knows, and which checkpoint tensors convert.
- `gguf_plan`: `plan_tensors`, the GGML type of every tensor. The GGUF writer
  (`edgedistill.export.gguf`) stores what it says, and GGUF QAT (`edgedistill.compress.gguf_quant`)
  fake-quantizes what it says, so a trained student and its file cannot disagree.

Nothing here imports torch; ``gguf`` is imported only when a plan is made.
"""
