"""Training curves for people: losses per component, temperature and alpha over global steps."""

from __future__ import annotations

from pathlib import Path

from edgedistill.io import atomic_path


def plot_curves(
    history: list[dict], path: str | Path, qat_start_step: int | None = None, title: str = ""
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if "global_step" in h]
    steps = [h["global_step"] for h in rows]
    fig, (ax_loss, ax_sched) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, height_ratios=[2, 1])
    names = sorted({k for h in rows for k in h if k.startswith("loss/")})
    ax_loss.plot(steps, [h["loss"] for h in rows], label="total (weighted)", color="black", linewidth=2)
    for name in names:
        ax_loss.plot(steps, [h.get(name, float("nan")) for h in rows], label=name.split("/", 1)[1])
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(loc="upper right", fontsize=8)
    ax_sched.plot(steps, [h["temperature"] for h in rows], label="temperature T", color="tab:red")
    ax_sched.set_ylabel("T")
    ax_alpha = ax_sched.twinx()
    ax_alpha.plot(steps, [h["alpha"] for h in rows], label="alpha", color="tab:blue", linestyle="--")
    ax_alpha.set_ylabel("alpha")
    ax_alpha.set_ylim(-0.05, 1.05)
    ax_sched.set_xlabel("optimiser step")
    ax_sched.grid(alpha=0.3)
    lines = ax_sched.get_legend_handles_labels()[0] + ax_alpha.get_legend_handles_labels()[0]
    ax_sched.legend(lines, [ln.get_label() for ln in lines], loc="upper right", fontsize=8)
    if qat_start_step is not None:
        for ax in (ax_loss, ax_sched):
            ax.axvline(qat_start_step, color="gray", linestyle=":")
        ax_loss.annotate(
            "int8 fake-quant on",
            (qat_start_step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -14),
            textcoords="offset points",
            fontsize=8,
            color="gray",
        )
    fig.suptitle(title or "distillation curves")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
