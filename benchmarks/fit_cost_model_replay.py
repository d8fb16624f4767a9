"""Replay fit's cost model on a screening that measured every shape: what it would have skipped, and was it right.

A `fit` OUT whose ``fit/costs.json`` holds a measurement of every (shape, export) is the ground
truth: the replay walks the shapes cheapest first as the screening does, asks the cost model
(`edgedistill.fit.cost_model`, the search's own settings) before each one whether it would skip it,
then adds the measured point. Each skip is checked against the measured verdict (`fit.cost.judge`):
a skip of a shape the measurement found feasible is a wrong skip. Nothing is measured or trained.

    python benchmarks/fit_cost_model_replay.py [--fit OUT] [--speedup 3 6] [--size 0.2]

Default OUT: bench-results/fit_sst2/fit-3x/run (the fit-3x screening of `fit_sst2.py`, measured before
the cost model existed, so every shape has its measurement). Writes
bench-results/fit_sst2/cost_model_replay.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import RESULTS, run_main

from edgedistill.io import atomic_write_json, atomic_write_text


def replay(fit_out: Path, budgets: dict, cfg) -> list[dict]:
    import yaml

    from edgedistill.fit import cost as cost_lib
    from edgedistill.fit.cost_model import CostModel, features
    from edgedistill.fit.space import Shape, read_teacher_config

    costs = json.loads((fit_out / "fit" / "costs.json").read_text(encoding="utf-8"))
    recipe = yaml.safe_load((fit_out.parent / "recipe.yaml").read_text(encoding="utf-8"))  # fit_sst2's layout
    teacher_config = read_teacher_config(recipe["distill"]["teacher"]["path"])
    max_length = recipe.get("export", {}).get("max_length", 128)
    teacher = costs["teacher"]["figures"]
    model = CostModel(cfg.model_min_points, cfg.model_max_residual, cfg.reject_margin, cfg.size_margin)
    shapes = [(Shape.from_dict(row["shape"]), row) for row in costs["candidates"]]
    feats = {s.key: features(s, teacher_config, max_length, decoder=False) for s, _ in shapes}
    out = []
    for shape, row in sorted(shapes, key=lambda p: feats[p[0].key]["macs"]):
        for e in row["exports"]:
            if e["figures"].get("status") != "measured":
                continue
            pair = (e["format"], e["precision"])
            why = model.hopeless(pair, feats[shape.key], teacher, budgets)
            verdict = cost_lib.judge(e["figures"], teacher, budgets, cfg.reject_margin, cfg.size_margin)
            out.append(
                {
                    "shape": shape.key,
                    "export": f"{e['format']}-{e['precision']}",
                    "macs_m": round(feats[shape.key]["macs"] / 1e6, 1),
                    "p50_ms": e["figures"].get("p50_ms"),
                    "size_mb": e["figures"].get("size_mb"),
                    "measured_verdict": "feasible" if verdict.feasible else "over",
                    "model": "skip" if why else "measure",
                    "why": why["reason"] if why else None,
                    "wrong_skip": bool(why) and verdict.feasible,
                }
            )
            model.add(pair, feats[shape.key], e["figures"])
    return out


def main() -> int:
    from edgedistill.fit.config import CostConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--fit",
        type=Path,
        default=RESULTS / "fit_sst2" / "fit-3x" / "run",
        help="OUT; its recipe.yaml beside it",
    )
    ap.add_argument("--speedup", type=float, nargs="+", default=[3.0, 6.0])
    ap.add_argument("--size", type=float, default=0.2, help="size_vs_teacher")
    args = ap.parse_args()
    cfg = CostConfig()
    runs = {}
    lines = ["# fit cost model, replayed on a screening that measured every shape", ""]
    for speedup in args.speedup:
        budgets = {"speedup_vs_teacher": speedup, "size_vs_teacher": args.size}
        rows = replay(args.fit, budgets, cfg)
        skipped = [r for r in rows if r["model"] == "skip"]
        runs[str(speedup)] = {"budgets": budgets, "rows": rows, "skipped": len(skipped),
                              "wrong_skips": sum(r["wrong_skip"] for r in rows),
                              "measured_over": sum(r["measured_verdict"] == "over" for r in rows)}  # fmt: skip
        lines += [
            f"## speedup_vs_teacher {speedup:g}, size_vs_teacher {args.size:g}",
            "",
            f"{len(skipped)} of {len(rows)} measurements skipped, {runs[str(speedup)]['wrong_skips']} of them "
            f"wrongly (feasible when measured); {runs[str(speedup)]['measured_over']} measured over budget.",
            "",
            "| shape | export | MMACs | p50 ms | MB | measured | model |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['shape']} | {r['export']} | {r['macs_m']:.0f} | {r['p50_ms']:.3f} | {r['size_mb']:.2f} | "
            f"{r['measured_verdict']} | {r['model'] + (': ' + r['why'] if r['why'] else '')} |"
            for r in rows
        ]
        lines.append("")
    from edgedistill.host import cpu_summary

    summary = {"fit": str(args.fit), "cost_config": cfg.model_dump(), "cpu": cpu_summary(), "runs": runs}
    dest = RESULTS / "fit_sst2"
    atomic_write_json(dest / "cost_model_replay.json", summary)
    atomic_write_text(dest / "cost_model_replay.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
