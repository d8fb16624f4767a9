"""The ``edgedistill synthesize`` command: its arguments, --set overrides and the summary it prints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgedistill.cliargs import add_set_flag


def add_synthesize_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `synthesize` verb: flags map onto SynthesizeConfig keys; ``--set KEY=VALUE`` reaches any other."""
    p = subparsers.add_parser(
        "synthesize",
        help="a transfer set for a classifier without task data (LM-written, corpus or random texts), resumable",
        description=(
            "Write OUT/transfer.tsv (sentence, label = the teacher's argmax, teacher_prob_<k>), OUT/transfer.jsonl "
            "and OUT/synthesize_report.json; `edgedistill distill --train OUT/transfer.tsv` trains on it. Texts "
            "are kept in OUT/texts: rerunning the same command resumes. Exit code 0 on success, 2 on a bad "
            "input or a store made with other settings, 130 when interrupted."
        ),
    )
    p.add_argument(
        "config", nargs="?", help="SynthesizeConfig YAML (optional: flags alone can describe the run)"
    )
    p.add_argument("--teacher", dest="teacher.path", metavar="DIR", help="the classifier teacher (HF folder)")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (rerunning the same command resumes)"
    )
    p.add_argument(
        "--source",
        dest="source",
        choices=["lm", "corpus", "random"],
        help="where texts come from (default lm)",
    )
    p.add_argument("--lm", dest="lm.path", metavar="FILE.gguf", help="the instruction-tuned LM (source lm)")
    p.add_argument("--count", dest="count", type=int, metavar="N", help="texts to make before selection")
    p.add_argument("--seed", dest="seed", type=int, metavar="N")
    p.add_argument(
        "--prompts-file", dest="prompts.file", metavar="FILE", help="prompts instead of the template"
    )
    p.add_argument("--student", dest="student.path", metavar="DIR", help="a student, for --rule disagreement")
    g = p.add_argument_group("selection")
    g.add_argument("--rule", dest="selection.rule", choices=["entropy", "disagreement", "none"])
    g.add_argument("--keep-fraction", dest="selection.keep_fraction", type=float, metavar="F")
    g = p.add_argument_group("LM")
    g.add_argument("--max-new-tokens", dest="lm.max_new_tokens", type=int, metavar="N")
    g.add_argument("--temperature", dest="lm.temperature", type=float, metavar="T")
    g.add_argument(
        "--threads", dest="lm.threads", type=int, metavar="N", help="llama.cpp threads (default 1)"
    )
    p.add_argument("--restart", action="store_true", help="delete the texts in --out and start again")
    add_set_flag(p, "any SynthesizeConfig key", "selection.min_words=4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synthesize)
    return p


_NOT_CONFIG = {"config", "out", "restart", "sets", "quiet", "func", "command", "verbose", "debug"}


def cmd_synthesize(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgedistill.compress.synthesize.config import SynthesizeConfig
    from edgedistill.compress.synthesize.run import TRANSFER_TSV, synthesize
    from edgedistill.config import load_config

    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and v is not None}
    overrides.update(dict(args.sets))
    cfg = load_config(SynthesizeConfig, args.config, overrides)
    report = synthesize(cfg, args.out, restart=args.restart, progress=not args.quiet)
    counts, lm = report["counts"], report.get("lm") or {}
    speed = f", LM {lm['tokens_per_s']} tokens/s" if lm.get("tokens_per_s") else ""
    Console(stderr=True).print(
        f"[bold green]done[/] {counts['kept']} of {counts['generated']} texts kept "
        f"(dropped {counts['dropped_by_reason']}){speed}\ntransfer set: {Path(args.out) / TRANSFER_TSV}"
    )
    return 0
