"""`edgedistill fit`: the command line of the student search (a run recipe with a `fit:` section, or flags)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgedistill.cliargs import add_set_flag


def _ints(value: str) -> list[int | None]:
    """`2,3,4` -> [2, 3, 4]; `none` keeps the teacher's value."""
    return [None if v.strip().lower() in ("none", "null") else int(v) for v in value.split(",") if v.strip()]


def _exports(value: str) -> list[dict[str, str]]:
    """`onnx:int8,openvino:int8` -> export choices."""
    pairs = []
    for item in value.split(","):
        fmt, _, precision = item.strip().partition(":")
        if not precision:
            raise argparse.ArgumentTypeError(f"{item!r}: write FORMAT:PRECISION, e.g. onnx:int8")
        pairs.append({"format": fmt, "precision": precision})
    return pairs


# flag dest -> recipe key
_KEYS = {
    "teacher": "distill.teacher.path",
    "task": "distill.task",
    "train": "distill.data.train",
    "eval": "distill.data.eval",
    "text_column": "distill.data.text_column",
    "label_column": "distill.data.label_column",
    "max_length": "distill.data.max_length",
    "qat": "distill.qat.mode",
    "epochs": "distill.training.epochs",
    "max_steps": "distill.training.max_steps",
    "batch_size": "distill.training.batch_size",
    "lr": "distill.training.lr",
    "layers": "fit.space.layers",
    "ffn": "fit.space.intermediate_size",
    "heads": "fit.space.num_attention_heads",
    "hidden": "fit.space.hidden_size",
    "exports": "fit.space.exports",
    "finalists": "fit.finalists",
    "min_steps": "fit.proxy.min_steps",
    "proxy_steps": "fit.proxy.max_steps",
}


def add_fit_parser(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="search the most accurate student that passes a target's budgets, measured on the target",
        description="Screen every student shape on the target, rank the feasible ones by short "
        "quantization-aware distillations (Optuna, successive halving) on a validation split carved from "
        "the training data, distill the best in full, gate them, and leave the winner as an `edgedistill run` "
        "folder plus OUT/fit. Exit code: the winner's gate (1 also when no candidate meets the budgets).",
    )
    p.add_argument("recipe", nargs="?", help="run recipe YAML with a `fit:` section (flags override it)")
    p.add_argument("--out", required=True, help="run folder (re-running resumes the search)")
    p.add_argument("--teacher", help="teacher folder")
    p.add_argument("--task", choices=["sequence-classification", "feature-extraction", "causal-lm"])
    p.add_argument("--train", help="training data (the validation split is carved from it)")
    p.add_argument("--eval", help="eval split the final report quotes (never used to choose)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--max-length", type=int)
    p.add_argument(
        "--target", help="target name or YAML: its budgets (absolute and *_vs_teacher) constrain the search"
    )
    g = p.add_argument_group("search space")
    g.add_argument("--layers", type=_ints, help="student depths to try, e.g. 2,3,4")
    g.add_argument("--ffn", type=_ints, help="feed-forward widths, e.g. 384,768,none")
    g.add_argument("--heads", type=_ints, help="heads per layer (where transformers can prune them)")
    g.add_argument("--hidden", type=_ints, help="narrower fresh widths")
    g.add_argument("--exports", type=_exports, help="FORMAT:PRECISION pairs, e.g. onnx:int8,openvino:int8")
    g = p.add_argument_group("training")
    g.add_argument("--qat", help="fake-quant during every distillation (qat.mode), e.g. int8")
    g.add_argument("--epochs", type=float, help="the finalists' full distillation")
    g.add_argument("--max-steps", type=int, help="the finalists' full distillation")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--min-steps", type=int, help="steps of the first proxy rung")
    g.add_argument("--proxy-steps", type=int, help="steps a proxy trains at most")
    g.add_argument("--finalists", type=int, help="best proxies distilled in full")
    g = p.add_argument_group("study")
    g.add_argument(
        "--storage", help="Optuna storage URL (default sqlite:///OUT/fit/study.db; postgresql://...)"
    )
    g.add_argument(
        "--worker",
        action="store_true",
        help="only help with the study (screening and proxies); the process without --worker finishes it",
    )
    g.add_argument(
        "--screen-only",
        action="store_true",
        help="only measure every shape x export on the target and say which fit the budgets "
        "(OUT/fit/fit_report.json, candidates.md; exit 1 if none); a later fit in OUT starts from it",
    )
    add_set_flag(p, "any run recipe key", "fit.proxy.max_steps=200")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_fit)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not args.recipe:
        out["version"] = 1
        out["fit.version"] = 1
    for dest, key in _KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out[key] = value
    if args.target:
        out["bench.targets"] = [args.target]
    out.update(dict(args.sets))
    return out


def cmd_fit(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgedistill.config import load_config
    from edgedistill.fit.search import fit
    from edgedistill.pipeline import RunRecipe

    recipe = load_config(RunRecipe, args.recipe, overrides(args))
    console = Console(stderr=True)

    def on_phase(phase: str, text: str) -> None:
        if not args.quiet:
            console.print(f"[bold]{phase:<10}[/] {text}")

    report = fit(
        recipe, args.out, storage=args.storage, worker=args.worker, progress=not args.quiet, on_phase=on_phase,
        screen_only=args.screen_only,
    )  # fmt: skip
    out = Path(args.out)
    if args.screen_only:
        for row in report["feasible"]:
            console.print(f"fits: {row['shape']} ({', '.join(row['exports'])})")
        console.print(
            f"{report['message']}\nfit report: {out / 'fit' / 'fit_report.json'} / {out / 'fit' / 'candidates.md'}"
        )
        return 0
    if args.worker:
        console.print(f"worker finished: {len(report['trials'])} trials in the study")
        return 0
    winner = report["winner"]
    console.print(
        f"winner: {winner['shape']['key']} ({winner['reason']})\n"
        f"fit report: {out / 'fit' / 'fit_report.json'} / {out / 'fit' / 'candidates.md'}\n"
        f"run report: {out / 'report.html'}\nexit code {report['exit_code']} (the winner's gate)"
    )
    return report["exit_code"]


def run_fit_recipe(recipe, out: str, args: argparse.Namespace) -> int:
    """`edgedistill run` on a recipe with a `fit:` section: the search in place of a fixed student."""
    from edgedistill.fit.search import fit

    report = fit(recipe, out, progress=not args.quiet)
    return report["exit_code"]
