"""Schedules for the distillation temperature T and the mixing weight alpha.

Lowering T over training is the curriculum used by several KD papers: soft targets first,
sharper targets later. A schedule maps training progress p in [0, 1] to a value.
"""

from __future__ import annotations

import math

from edgedistill.compress.config import ConstantSchedule, RampSchedule


def schedule_value(schedule: ConstantSchedule | RampSchedule, progress: float) -> float:
    """Value of ``schedule`` at ``progress`` (fraction of optimiser steps done, clamped to [0, 1])."""
    p = min(max(progress, 0.0), 1.0)
    if isinstance(schedule, ConstantSchedule):
        return schedule.value
    if schedule.kind == "linear":
        weight = p
    else:  # cosine: slow start, fast middle, slow end
        weight = 0.5 * (1.0 - math.cos(math.pi * p))
    return schedule.start + (schedule.end - schedule.start) * weight
