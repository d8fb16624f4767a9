"""Parity: an artifact, run in its own runtime, must compute what the torch student computes.

Real sentences of several lengths go through the student's tokenizer; the same token ids feed
torch (float32, or the NNCF fake-quant model for QAT int8 artifacts) and the artifact. Each output
is compared over real (unpadded) tokens: max/mean abs diff, top-1 agreement for logits, cosine for
embeddings. Outside the precision's tolerance, export fails with a per-output table.

Where things are: `inputs` (sentences, feeds, calibration), `checker` (torch against the artifact,
file and as deployed), `report` (OutputParity, ParityReport, the errors).
"""

from __future__ import annotations

from edgedistill.export.parity.checker import (
    check,
    compare,
    mean_pool,
    reference_outputs,
    tolerance_for_run,
    torch_outputs,
)
from edgedistill.export.parity.inputs import (
    BUILTIN_SENTENCES,
    calibration_feeds,
    encode,
    load_sentences,
    max_sequence_length,
    parity_feeds,
    parity_sentences,
)
from edgedistill.export.parity.report import DeployedParityError, OutputParity, ParityError, ParityReport

__all__ = [
    "BUILTIN_SENTENCES",
    "DeployedParityError",
    "OutputParity",
    "ParityError",
    "ParityReport",
    "calibration_feeds",
    "check",
    "compare",
    "encode",
    "load_sentences",
    "max_sequence_length",
    "mean_pool",
    "parity_feeds",
    "parity_sentences",
    "reference_outputs",
    "tolerance_for_run",
    "torch_outputs",
]
