"""Export student models to ONNX, OpenVINO IR and GGUF (see issue: export)."""
