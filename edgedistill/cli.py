"""The `edgedistill` command line. One verb per stage; flags override recipe values.

Flags map onto recipe keys (``--max-steps`` -> ``training.max_steps``); ``--set KEY=VALUE``
reaches any other key. Errors raised on purpose print as one readable message (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill import __version__
from edgedistill.cliargs import add_set_flag
from edgedistill.errors import EdgeDistillError


def _layers(value: str) -> int | list[int]:
    value = value.strip()
    return [int(v) for v in value.split(",") if v.strip()] if "," in value else int(value)


def _schedule(value: str) -> dict[str, Any]:
    """`4` -> constant 4; `linear:4:1` / `cosine:4:1` -> ramp from 4 to 1."""
    parts = value.split(":")
    if len(parts) == 1:
        return {"kind": "constant", "value": float(parts[0])}
    if len(parts) == 3 and parts[0] in ("linear", "cosine"):
        return {"kind": parts[0], "start": float(parts[1]), "end": float(parts[2])}
    raise argparse.ArgumentTypeError(f"{value!r}: use a number, or linear:START:END / cosine:START:END")


def _losses(value: str) -> list[dict[str, Any]]:
    """`soft_kl:1,hard_ce:0.5` -> loss specs."""
    specs = []
    for item in value.split(","):
        name, _, weight = item.strip().partition(":")
        specs.append({"name": name, "weight": float(weight) if weight else 1.0})
    return specs


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--train", dest="data.train", help="training file/folder/hub id")
    g.add_argument("--eval", dest="data.eval", help="evaluation file/folder/hub id")
    g.add_argument("--text-column", dest="data.text_column")
    g.add_argument("--text-pair-column", dest="data.text_pair_column")
    g.add_argument("--label-column", dest="data.label_column")
    g.add_argument("--max-length", dest="data.max_length", type=int)
    g.add_argument("--max-train-samples", dest="data.max_train_samples", type=int)
    g.add_argument("--max-eval-samples", dest="data.max_eval_samples", type=int)
    g.add_argument(
        "--strict",
        dest="data.strict",
        action="store_true",
        default=None,
        help="refuse the data at the first bad row instead of skipping it",
    )


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", dest="training.epochs", type=float)
    g.add_argument("--max-steps", dest="training.max_steps", type=int)
    g.add_argument("--lr", dest="training.lr", type=float)
    g.add_argument("--batch-size", dest="training.batch_size", type=int)
    g.add_argument("--grad-accum", dest="training.grad_accum", type=int)
    g.add_argument("--seed", dest="training.seed", type=int)
    g.add_argument("--save-steps", dest="training.save_steps", type=int)
    g.add_argument("--logging-steps", dest="training.logging_steps", type=int)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", help="recipe YAML (optional: flags alone can describe the run)")
    p.add_argument(
        "--task", dest="task", choices=["sequence-classification", "feature-extraction", "causal-lm"]
    )
    p.add_argument("--out", required=True, help="output folder (re-running the same command resumes)")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier run in --out and start again")
    add_set_flag(p, "any recipe key", "qat.calibration_batches=8")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"recipe", "out", "overwrite", "sets", "quiet", "func", "command", "verbose", "debug"}
    overrides = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    overrides.update(dict(args.sets))
    return overrides


def cmd_distill(args: argparse.Namespace) -> int:
    from edgedistill.compress.config import DistillRecipe
    from edgedistill.config import load_config

    recipe = load_config(DistillRecipe, args.recipe, _overrides(args))
    from edgedistill.compress.distillation import distill

    report = distill(recipe, args.out, overwrite=args.overwrite, progress=not args.quiet)
    _print_summary(report, ("teacher", "student"), Path(args.out) / "distill_report.json")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from edgedistill.compress.config import FinetuneRecipe
    from edgedistill.config import load_config

    recipe = load_config(FinetuneRecipe, args.recipe, _overrides(args))
    from edgedistill.compress.finetuning import finetune

    report = finetune(recipe, args.out, overwrite=args.overwrite, progress=not args.quiet)
    _print_summary(report, ("model",), Path(args.out) / "finetune_report.json")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from edgedistill.compress.config import DistillRecipe, FinetuneRecipe
    from edgedistill.compress.generate import GenerateConfig
    from edgedistill.config import json_schema
    from edgedistill.export.config import ExportConfig
    from edgedistill.pipeline import RunRecipe

    kinds = {"distill": DistillRecipe, "finetune": FinetuneRecipe, "export": ExportConfig, "run": RunRecipe}
    kinds["generate"] = GenerateConfig
    model = kinds[args.kind]
    text = json.dumps(json_schema(model), indent=2) + "\n"
    if args.out:
        from edgedistill.io import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgedistill.config import load_config
    from edgedistill.pipeline import RunRecipe, run

    sets = dict(args.sets)
    for key in ("allow_skipped", "allow_inconclusive"):  # --allow-skipped / --allow-inconclusive
        if getattr(args, key):
            sets[f"gate.{key}"] = True
    recipe = load_config(RunRecipe, args.recipe, sets)
    if recipe.fit is not None:  # the student is searched, then run like any other
        from edgedistill.fit.cli import run_fit_recipe

        return run_fit_recipe(recipe, args.out, args)
    console = Console(stderr=True)
    symbols = {"done": "[green]done[/]", "skipped": "[dim]skipped (inputs unchanged)[/]"}

    def on_stage(stage: str, status: str, seconds: float) -> None:
        shown = symbols.get(status, f"[bold]{status}[/]")
        console.print(f"{stage:<24} {shown}" + (f"  {seconds:.1f} s" if seconds >= 0.05 else ""))

    summary = run(recipe, args.out, force=args.force, progress=not args.quiet, on_stage=on_stage)
    out = Path(args.out)
    console.print(
        f"report: {out / 'report.html'}\nsummary: {out / 'summary.json'} / {out / 'summary.md'}"
        + (f"\npareto: {summary['pareto_png']}" if summary.get("pareto_png") else "")
        + f"\nexit code {summary['exit_code']} (the gate's)"
        + ("" if args.verbose else f"\nlibrary messages: {out / 'edgedistill.log'} (--verbose shows them)")
    )
    return summary["exit_code"]


def _print_summary(report: dict, who: tuple[str, ...], report_path: Path) -> None:
    """The eval metrics of ``who`` (the last is the trained model) as the run report shows them."""
    # non-zero ranks of a multi-process run write no report
    if not (report.get(who[-1]) or {}).get("metrics"):
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from edgedistill.report import metrics_table

    table = Table(box=None)
    for header in ("output", "metric", *who):
        table.add_column(header, justify="left" if header in ("output", "metric") else "right")
    for row in metrics_table(report, who):
        table.add_row(*(Text(cell) for cell in row))  # names as written, never read as rich markup
    console = Console(stderr=True)
    console.print(f"[bold green]done[/] {who[-1]}:")
    console.print(table)
    console.print(f"report: {report_path}", markup=False)


def build_parser() -> argparse.ArgumentParser:
    from typing import get_args

    from edgedistill.compress.config import QATConfig  # pydantic only: no torch at parse time

    parser = argparse.ArgumentParser(prog="edgedistill", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgedistill {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show third-party warnings, library logs and native messages on the console (otherwise they go "
        "to a log in the output: OUT/edgedistill.log, or REPORT.log beside a report file), and debug logging",
    )
    parser.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="distill a student from a teacher (optionally quantization-aware)")
    _add_common(p)
    g = p.add_argument_group("teacher and student")
    g.add_argument(
        "--teacher",
        dest="teacher.path",
        help="teacher folder, one .gguf file (dequantized to float32), or hub id",
    )
    g.add_argument(
        "--allow-pickle",
        dest="teacher.allow_pickle",
        action="store_true",
        default=None,
        help="accept pickle teacher weights (only for files you trust)",
    )
    g.add_argument("--trust-remote-code", dest="teacher.trust_remote_code", action="store_true", default=None)
    g.add_argument("--student", dest="student.path", help="use this HF folder as the student")
    g.add_argument("--student-layers", dest="student.layers", type=_layers, help="K, or a list like 0,2,5")
    g.add_argument(
        "--student-hidden", dest="student.hidden_size", type=int, help="narrower width (fresh init)"
    )
    g.add_argument(
        "--student-heads",
        dest="student.num_attention_heads",
        type=int,
        help="heads per layer; without --student-hidden the least important teacher heads are pruned",
    )
    g.add_argument(
        "--student-ffn",
        dest="student.intermediate_size",
        type=int,
        help="feed-forward neurons per layer; without --student-hidden the least important are pruned",
    )
    g.add_argument(
        "--prune-importance",
        dest="student.prune.importance",
        choices=["activation", "magnitude"],
        help="how pruned heads/neurons are scored (default activation, on training batches)",
    )
    g = p.add_argument_group("distillation")
    g.add_argument("--losses", dest="losses", type=_losses, help="e.g. soft_kl:1,hard_ce:1,hidden_mse:0.5")
    g.add_argument("--temperature", dest="temperature", type=_schedule, help="4, or linear:8:2, cosine:8:2")
    g.add_argument("--alpha", dest="alpha", type=_schedule, help="0.7, or linear:0.9:0.5")
    g.add_argument(
        "--qat",
        dest="qat.mode",
        choices=list(get_args(QATConfig.model_fields["mode"].annotation)),
        help="fake-quant scheme (see qat.mode in the recipe)",
    )
    g.add_argument(
        "--qat-start", dest="qat.start_fraction", type=float, help="fraction of steps before fake-quant"
    )
    g.add_argument(
        "--cache-teacher-outputs", dest="training.cache_teacher_outputs", action="store_true", default=None
    )
    _add_data_flags(p)
    _add_training_flags(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("finetune", help="plain supervised training (task teacher, or no-KD student baseline)")
    _add_common(p)
    p.add_argument("--model", dest="model.path", help="model folder or hub id")
    p.add_argument(
        "--layers", dest="layers", type=_layers, help="keep K (or listed) layers first: a no-KD student"
    )
    p.add_argument("--allow-pickle", dest="model.allow_pickle", action="store_true", default=None)
    _add_data_flags(p)
    _add_training_flags(p)
    p.set_defaults(func=cmd_finetune)

    from edgedistill.compress.generate import add_generate_parser

    add_generate_parser(sub)
    from edgedistill.compress.synthesize import add_synthesize_parser

    add_synthesize_parser(sub)
    from edgedistill.export.cli import add_export_parser

    add_export_parser(sub)
    from edgedistill.bench.cli import add_bench_parsers

    add_bench_parsers(sub)
    from edgedistill.fit.cli import add_fit_parser

    add_fit_parser(sub)

    p = sub.add_parser(
        "run",
        help="one recipe from teacher to gated artifacts: distill, export, bench, gate, reports",
        description="Run (or resume) the pipeline; stages whose inputs are unchanged are skipped. "
        "Exit code: the worst gate's (0 pass, 1 a budget failed, 3 inconclusive, 4 not judged; "
        "see `edgedistill gate --help`).",
    )
    p.add_argument("recipe", help="run recipe YAML (sections distill, export, bench, gate)")
    p.add_argument("--out", required=True, help="run folder (re-running resumes and skips finished stages)")
    p.add_argument(
        "--force",
        action="append",
        default=[],
        choices=["distill", "export", "bench", "teacher", "gate", "all"],
        help="redo this stage even if its inputs are unchanged (repeatable)",
    )
    add_set_flag(p, "any recipe key", "distill.training.max_steps=50")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # absent here: the top-level flag's value stands
        help="third-party output on the console instead of OUT/edgedistill.log",
    )
    for flag, what in (("skipped", "4: nothing judged / a budget not judged"), ("inconclusive", "3")):
        p.add_argument(
            f"--allow-{flag}", action="store_true", help=f"gate.allow_{flag}: exit 0 instead of {what}"
        )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("schema", help="write the JSON schema of recipes")
    p.add_argument("--kind", choices=["distill", "finetune", "export", "run", "generate"], default="distill")
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from edgedistill.console import log_path_for, third_party_to_log

    # third-party warnings, library logs and native messages go to a log beside the output
    with third_party_to_log(log_path_for(args.command, getattr(args, "out", None)), verbose=args.verbose):
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except EdgeDistillError as exc:
        if args.debug:
            raise
        print(f"edgedistill {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"edgedistill {args.command}: interrupted; run the same command again to resume", file=sys.stderr
        )
        return 130
    except Exception as exc:  # anything not raised on purpose is a bug: one line, exit 2
        if args.debug:
            raise
        detail = " ".join(str(exc).split())[:300]
        print(
            f"edgedistill {args.command}: unexpected error {type(exc).__name__}: {detail} "
            "(a bug; rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
