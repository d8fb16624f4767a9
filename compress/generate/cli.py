"""The ``edgedistill generate`` command: its arguments, --set overrides and the summary it prints."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from edgedistill.cliargs import add_set_flag
from edgedistill.compress.generate.config import GenerateConfig
from edgedistill.compress.generate.run import generate
from edgedistill.compress.generate.store import SAMPLES_FILE

logger = logging.getLogger(__name__)


def add_generate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The `generate` verb: flags map onto GenerateConfig keys; ``--set KEY=VALUE`` reaches any other."""
    p = subparsers.add_parser(
        "generate",
        help="sample a teacher LM's responses to prompts (sequence-level KD data), resumable",
        description=(
            "Write OUT/samples.jsonl (prompt, response, ids, seeds, finish reasons, token counts) and "
            "OUT/generate.json. Rerunning the same command resumes; identical (prompt, response) pairs are "
            "stored once. Exit code 0 on success, 2 on a bad input or a store made with other settings, "
            "130 when interrupted."
        ),
    )
    p.add_argument(
        "config", nargs="?", help="GenerateConfig YAML (optional: flags alone can describe the run)"
    )
    p.add_argument(
        "--teacher",
        dest="teacher.path",
        help="teacher: HF causal-LM folder, one .gguf file (run by llama.cpp on the CPU, see --engine), or hub id",
        metavar="PATH",
    )
    p.add_argument(
        "--prompts",
        dest="prompts",
        help=".txt (a prompt a line), .jsonl (a 'prompt' field), ...",
        metavar="FILE",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="store folder (rerunning the same command resumes)"
    )
    p.add_argument(
        "--prompt-column",
        dest="prompt_column",
        help="field holding the prompt (default: prompt)",
        metavar="NAME",
    )
    p.add_argument(
        "--chat-template",
        dest="chat_template",
        action="store_true",
        default=None,
        help="wrap prompts with the tokenizer's chat template",
    )
    p.add_argument(
        "--system-prompt", dest="system_prompt", help="system message (with --chat-template)", metavar="TEXT"
    )
    g = p.add_argument_group("sampling")
    g.add_argument(
        "--num-samples", dest="sampling.num_samples", type=int, help="responses per prompt", metavar="N"
    )
    g.add_argument("--max-new-tokens", dest="sampling.max_new_tokens", type=int, metavar="N")
    g.add_argument("--temperature", dest="sampling.temperature", type=float, metavar="T")
    g.add_argument("--top-p", dest="sampling.top_p", type=float, metavar="P")
    g.add_argument("--top-k", dest="sampling.top_k", type=int, help="0: no limit", metavar="K")
    g.add_argument("--repetition-penalty", dest="sampling.repetition_penalty", type=float, metavar="X")
    g.add_argument("--seed", dest="sampling.seed", type=int, metavar="N")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument(
        "--greedy", dest="sampling.do_sample", action="store_const", const=False, help="greedy decoding"
    )
    mode.add_argument(
        "--sample", dest="sampling.do_sample", action="store_const", const=True, help="sampling (default)"
    )
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", dest="batch_size", type=int, metavar="N")
    g.add_argument("--dtype", dest="dtype", choices=["auto", "float32", "float16", "bfloat16"])
    g.add_argument("--device", dest="device", choices=["auto", "cpu", "cuda"])
    g.add_argument(
        "--engine",
        dest="engine",
        choices=["auto", "torch", "llama.cpp"],
        help="what runs the teacher (auto: llama.cpp for a .gguf teacher on the CPU, else torch)",
    )
    g.add_argument(
        "--threads",
        dest="llama_cpp.threads",
        type=int,
        metavar="N",
        help="llama.cpp threads (default: the idle cores; its workers spin, so keep it under the idle cores)",
    )
    g.add_argument(
        "--format", dest="output_format", choices=["jsonl", "parquet"], help="parquet: also samples.parquet"
    )
    g.add_argument("--trust-remote-code", dest="teacher.trust_remote_code", action="store_true", default=None)
    g.add_argument("--allow-pickle", dest="teacher.allow_pickle", action="store_true", default=None)
    again = g.add_mutually_exclusive_group()
    again.add_argument("--force", action="store_true", help="add to a store made with other settings")
    again.add_argument("--restart", action="store_true", help="delete the store in --out and start again")
    add_set_flag(p, "any GenerateConfig key", "sampling.top_p=0.9")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)
    return p


_NOT_CONFIG = {"config", "out", "force", "restart", "sets", "quiet", "func", "command", "verbose", "debug"}


def cmd_generate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edgedistill.config import load_config

    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG and v is not None}
    overrides.update(dict(args.sets))
    cfg = load_config(GenerateConfig, args.config, overrides)
    report = generate(cfg, args.out, force=args.force, restart=args.restart, progress=not args.quiet)
    counts = report["counts"]
    Console(stderr=True).print(
        f"[bold green]done[/] {counts['records_stored']} samples stored, {counts['duplicates_skipped']} "
        f"duplicates skipped ({counts['samples_done']}/{counts['samples_planned']} done)\n"
        f"store: {Path(args.out) / SAMPLES_FILE}"
    )
    return 0
