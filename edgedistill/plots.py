"""Accuracy-vs-latency pictures: one function every report draws its Pareto plot with.

`pareto_plot` takes plain records (points, budgets, reference points such as the teacher) so the
run report (`edgedistill.report`) and a candidate search can draw the same picture from their own
figures. The latency axis is logarithmic and fitted to the points: a budget far away is drawn as
an arrow at the edge with its value, never by stretching the axis until the points crowd into a
corner. matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgedistill.io import atomic_path

SERIES_STYLES = [("#1f77b4", "o"), ("#d62728", "s"), ("#2ca02c", "^"), ("#9467bd", "D"), ("#ff7f0e", "v")]
REFERENCE_STYLE = {"marker": "*", "s": 260, "facecolors": "gold", "edgecolors": "black", "zorder": 4}


@dataclass(frozen=True)
class PlotPoint:
    """One artifact or candidate: its latency (x), its task metric (y), its legend group."""

    label: str
    latency_ms: float
    value: float
    series: str = ""
    size_mb: float | None = None  # marker area grows with it; None: a fixed size


@dataclass(frozen=True)
class Budget:
    """A series' bars: the latency budget (vertical line) and the metric floor (horizontal line)."""

    series: str = ""
    max_latency_ms: float | None = None
    min_value: float | None = None


def _padded_log_range(values: Sequence[float], factor: float = 1.6) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high <= low * 1.05:  # one point, or all alike: a decade-wide window around them
        middle = math.sqrt(low * high)
        return middle / 3.0, middle * 3.0
    return low / factor, high * factor


def _padded_range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or max(abs(high) * 0.01, 1e-3)
    return low - pad, high + pad


def pareto_plot(
    points: Sequence[PlotPoint],
    budgets: Sequence[Budget],
    reference: Sequence[PlotPoint],
    out_png: str | Path,
    *,
    metric: str = "accuracy",
    title: str = "Accuracy vs latency",
    latency_label: str = "p95 latency (ms, batch 1, log scale) - lower is better",
) -> bool:
    """Draw ``points`` (one colour and marker per series), ``reference`` points (gold stars, e.g. the
    teacher) and each series' budget lines into ``out_png``; written atomically.

    The axes fit the points and reference points only; a budget outside them is an arrow at the
    edge labelled with its value. Returns False (and writes nothing) when there is nothing to draw.
    """
    drawn = [p for p in (*points, *reference) if p.latency_ms and p.latency_ms > 0 and p.value is not None]
    if not drawn:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=120)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    # labels at 1, 2, 5 x 10^k in plain ms (not 2x10^1), the other decades' ticks unlabelled
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    x_low, x_high = _padded_log_range([p.latency_ms for p in drawn])
    y_low, y_high = _padded_range([p.value for p in drawn])
    ax.set_xlim(x_low, x_high)
    ax.set_ylim(y_low, y_high)
    series = list(dict.fromkeys([p.series for p in points] + [b.series for b in budgets]))
    colors = {name: SERIES_STYLES[i % len(SERIES_STYLES)] for i, name in enumerate(series)}
    sizes = [p.size_mb for p in points if p.size_mb]
    max_mb = max(sizes) if sizes else 1.0
    labels: list[tuple[PlotPoint, str]] = []
    for name in series:
        color, marker = colors[name]
        mine = [p for p in points if p.series == name and p in drawn]
        if mine:
            ax.scatter(
                [p.latency_ms for p in mine],
                [p.value for p in mine],
                s=[40 + 700 * (p.size_mb or max_mb / 4) / max_mb for p in mine],
                c=color,
                marker=marker,
                alpha=0.55,
                edgecolors="black",
                linewidths=0.6,
                label=name or None,
                zorder=3,
            )
            labels += [(p, color) for p in mine]
    for p in reference:
        if p in drawn:
            ax.scatter([p.latency_ms], [p.value], label=f"reference: {p.label}", **REFERENCE_STYLE)
            labels.append((p, "black"))
    for budget in budgets:
        _draw_budget(
            ax, budget, colors.get(budget.series, ("#555555", "o"))[0], (x_low, x_high), (y_low, y_high)
        )
    ax.set_xlabel(latency_label)
    ax.set_ylabel(f"{metric} - higher is better")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    if any(p.series for p in points) or reference:
        ax.legend(loc="best", fontsize=8, markerscale=0.5)
    fig.tight_layout()
    _place_labels(fig, ax, labels)  # after the layout is final: placement works in screen space
    with atomic_path(Path(out_png)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True


def _draw_budget(
    ax, budget: Budget, color: str, x_range: tuple[float, float], y_range: tuple[float, float]
) -> None:
    """A budget inside the axes is a dashed line; outside, an arrow at the edge pointing at it."""
    name = f"{budget.series} " if budget.series else ""
    latency = budget.max_latency_ms
    if latency:
        if x_range[0] <= latency <= x_range[1]:
            ax.axvline(latency, color=color, linestyle="--", linewidth=1)
            ax.annotate(f"{name}latency budget {latency:g} ms", (latency, 0.02), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, color=color, ha="right", va="bottom")  # fmt: skip
        else:
            right = latency > x_range[1]
            ax.annotate(
                f"{name}latency budget {latency:g} ms {'→' if right else '←'}",
                (0.99 if right else 0.01, 0.03),
                xycoords="axes fraction",
                fontsize=7,
                color=color,
                ha="right" if right else "left",
            )
    floor = budget.min_value
    if floor is not None:
        if y_range[0] <= floor <= y_range[1]:
            ax.axhline(floor, color=color, linestyle=":", linewidth=1)
            ax.annotate(f"{name}floor {floor:g}", (0.01, floor), xycoords=("axes fraction", "data"),
                        fontsize=7, color=color, va="bottom")  # fmt: skip
        else:
            above = floor > y_range[1]
            ax.annotate(
                f"{name}floor {floor:g} {'↑' if above else '↓'}",
                (0.01, 0.97 if above else 0.03),
                xycoords="axes fraction",
                fontsize=7,
                color=color,
                va="top" if above else "bottom",
            )


# label offsets (points) tried in order until a label overlaps no other label
_OFFSETS = [(dx, dy) for dy in (8, -14, 22, -28, 36, -42, 50, -56, 64, -70) for dx in (10, -10)]


def _place_labels(fig, ax, labels: list[tuple[PlotPoint, str]]) -> None:
    """Annotate each point with its label and size, moving labels until none overlap."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    placed = []
    for p, color in sorted(labels, key=lambda item: (item[0].latency_ms, -item[0].value)):
        text = p.label + (f" ({p.size_mb:.1f} MB)" if p.size_mb else "")
        x_frac = ax.transAxes.inverted().transform(ax.transData.transform((p.latency_ms, p.value)))[0]
        offsets = [(-dx, dy) for dx, dy in _OFFSETS] if x_frac > 0.7 else _OFFSETS  # labels stay inside
        for dx, dy in offsets:
            note = ax.annotate(
                text,
                (p.latency_ms, p.value),
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx > 0 else "right",
                fontsize=8,
                color=color,
                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5, "alpha": 0.6},
            )
            note.update_positions(renderer)  # apply the offset before measuring
            box = Text.get_window_extent(note, renderer).expanded(1.06, 1.3)  # the text, not its leader line
            if not any(box.overlaps(other) for other in placed):
                break
            if (dx, dy) != offsets[-1]:
                note.remove()
        placed.append(box)
