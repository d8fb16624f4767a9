"""A cost model fitted to the screening's measured points: it skips hopeless shapes, it never decides a finalist.

Screening measures the shapes from the cheapest to the dearest (by multiply-accumulates). After
each measurement, per (format, precision), two lines are fitted by least squares over the shapes
measured so far: latency (p50, p95, p99) against the shape's multiply-accumulates per sequence,
and file size against its parameters (`features`). A shape not yet measured is **skipped** (never
measured, trained or made a finalist) only when the model is trustworthy and its prediction is
hopeless even read optimistically:

- at least ``model_min_points`` shapes with distinct features are measured, and every one of them
  lies within ``model_max_residual`` (a share) of the line;
- the prediction times the most favourable measured/predicted ratio seen is still clearly over a
  budget: beyond the same margins (``reject_margin``, ``size_margin``) that reject a measured shape.

Only budgets the features explain are modelled: p50/p95/p99 latency, ``speedup_vs_teacher`` (from
p50), ``artifact_size_mb`` and ``size_vs_teacher``. Memory, throughput and decode budgets are
always measured. A shape the model cannot judge is measured, so a wrong model costs measurements,
never a feasible shape it was not sure of; a skipped row carries its predictions and the points
they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgedistill.fit.cost import clearly_over, margin_of
from edgedistill.fit.space import Shape

# (budget, figure, feature, kind): what the model may judge
MODELLED = (
    ("p50_latency_ms", "p50_ms", "macs", "max"),
    ("p95_latency_ms", "p95_ms", "macs", "max"),
    ("p99_latency_ms", "p99_ms", "macs", "max"),
    ("speedup_vs_teacher", "p50_ms", "macs", "min"),
    ("artifact_size_mb", "size_mb", "params", "max"),
    ("size_vs_teacher", "size_mb", "params", "max"),
)


def features(shape: Shape, teacher_config: dict[str, Any], seq_len: int, decoder: bool) -> dict[str, float]:
    """Multiply-accumulates of one sequence (an encoder) or one decoded token (a decoder) and parameters.

    Proportional, not exact (layer norms, biases and softmax are left out): the fit's intercept and
    slope absorb what a runtime adds. A decoder's token also pays its LM head (hidden x vocabulary).
    """
    t = teacher_config
    heads_t = int(t.get("num_attention_heads") or 1)
    kv_t = int(t.get("num_key_value_heads") or heads_t)
    hidden_t = int(t.get("hidden_size") or 0)
    ffn_t = int(t.get("intermediate_size") or 4 * hidden_t)
    head_dim = int(t.get("head_dim") or hidden_t // heads_t)
    hidden = int(shape.hidden_size or hidden_t)
    # a narrower fresh student keeps the head size and the FFN ratio (`compress.models.derive_narrower`)
    heads = int(shape.num_attention_heads or (max(1, hidden // head_dim) if shape.hidden_size else heads_t))
    if shape.hidden_size:
        head_dim = hidden // heads
    kv_heads = max(1, heads * kv_t // heads_t)
    ffn = int(shape.intermediate_size or (round(ffn_t * hidden / hidden_t) if shape.hidden_size else ffn_t))
    vocab = int(t.get("vocab_size") or 0)
    mlp_matrices = 3 if decoder else 2  # gate/up/down (llama, qwen2) or up/down (BERT)
    attn, kv = heads * head_dim, kv_heads * head_dim
    per_layer_weights = hidden * attn + 2 * hidden * kv + attn * hidden + mlp_matrices * hidden * ffn
    layers = len(shape.layers)
    tokens = 1 if decoder else seq_len
    context = seq_len  # the keys each token attends to
    macs = layers * tokens * (per_layer_weights + 2 * context * attn) + (
        tokens * hidden * vocab if decoder else 0
    )
    params = layers * per_layer_weights + vocab * hidden
    return {"macs": float(macs), "params": float(params)}


@dataclass
class Line:
    """``figure ~ intercept + slope * feature`` over measured points, with how far they stray."""

    intercept: float
    slope: float
    points: int
    max_residual: float  # the largest |measured / predicted - 1|
    best_ratio: float  # the smallest measured / predicted: the most optimistic reading

    def predict(self, x: float) -> float:
        return self.intercept + self.slope * x


def fit_line(points: list[tuple[float, float]]) -> Line | None:
    """Least squares through (feature, figure); None with fewer than two distinct features or a
    line that is not increasing (cost never falls with more compute or more weights)."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return None
    n = len(points)
    mx, my = sum(xs) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    if slope <= 0:
        return None
    intercept = my - slope * mx
    ratios = []
    for x, y in points:
        predicted = intercept + slope * x
        if predicted <= 0:
            return None
        ratios.append(y / predicted)
    return Line(intercept, slope, n, max(abs(r - 1) for r in ratios), min(ratios))


class CostModel:
    """The measured points of one search, per (format, precision), and the skip decision."""

    def __init__(self, min_points: int, max_residual: float, margin: float, size_margin: float):
        self.min_points = min_points
        self.max_residual = max_residual
        self.margin = margin
        self.size_margin = size_margin
        self.points: dict[tuple[str, str], list[tuple[dict[str, float], dict[str, Any]]]] = {}

    def add(self, export: tuple[str, str], feats: dict[str, float], figures: dict[str, Any]) -> None:
        if figures.get("status") == "measured" and not figures.get("emulated"):
            self.points.setdefault(export, []).append((feats, figures))

    def hopeless(
        self,
        export: tuple[str, str],
        feats: dict[str, float],
        teacher: dict[str, Any],
        budgets: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Why the shape is clearly over a budget by the model (the row's ``predicted``), or None."""
        measured = self.points.get(export, [])
        for budget, figure, feature, kind in MODELLED:
            limit = budgets.get(budget)
            if limit is None:
                continue
            pts = [(f[feature], float(m[figure])) for f, m in measured if m.get(figure) is not None]
            line = fit_line(pts) if len({x for x, _ in pts}) >= self.min_points else None
            if line is None or line.max_residual > self.max_residual:
                continue
            low = line.predict(feats[feature]) * line.best_ratio  # the most optimistic reading
            value = _as_budget(budget, low, teacher)
            if value is None:
                continue
            m = margin_of(budget, self.margin, self.size_margin)
            if clearly_over(value, float(limit), kind, m):
                sign = ">" if kind == "max" else "<"
                return {
                    "budget": budget,
                    "value": value,
                    "limit": float(limit),
                    "figure": figure,
                    "predicted_low": round(low, 4),
                    "feature": feature,
                    "feature_value": feats[feature],
                    "points": line.points,
                    "max_residual": round(line.max_residual, 4),
                    "reason": f"{budget}: predicted {value:.4g} {sign} {float(limit):.4g} beyond the "
                    f"x{m:g} margin (skipped by the cost model: fitted to {line.points} measured "
                    f"shapes, read at the most optimistic measured ratio)",
                }
        return None


def _as_budget(budget: str, figure: float, teacher: dict[str, Any]) -> float | None:
    """A predicted figure in its budget's terms (relative budgets against the teacher's screening)."""
    if budget == "speedup_vs_teacher":
        return teacher.get("p50_ms") / figure if teacher.get("p50_ms") and figure > 0 else None
    if budget == "size_vs_teacher":
        return figure / teacher["size_mb"] if teacher.get("size_mb") else None
    return figure
