"""edgedistill: distill a large model into a small one that provably fits an edge device.

Importing this package is cheap on purpose: it imports no torch, nncf, openvino or llama_cpp.
The stages live in ``edgedistill.compress``, ``edgedistill.export``, ``edgedistill.bench``
and ``edgedistill.targets``; the CLI is ``edgedistill`` (or ``python -m edgedistill``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
