"""The measuring process: ``python -m edgedistill.bench._worker JOB.json RESULT.json``.

One fresh process per measurement, so its peak memory is the artifact's own. In order:

1. pin the process to the job's CPUs (``sched_setaffinity``) before anything else is imported
   (thread-count variables are set by the parent in the environment, before the interpreter starts);
2. import the runtime (timed), open the artifact (``session_create_ms``), record RSS after each;
3. ``latency``: first inference timed on its own, then warmup, then at least ``min_iterations``
   AND at least ``min_seconds`` timed iterations, every one kept; decoders time whole requests
   with time-to-first-token and decode speed;
   ``accuracy``: predictions for the job's texts, saved as ``.npy`` beside the result;
4. VmHWM of this process (its peak RSS since exec), then the result JSON (written atomically).

Only the standard library, numpy and the runtime are imported here: no pydantic, no torch
(unless the runtime is torch), so they do not count against the artifact's memory.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _mb(kb: int | None) -> float | None:
    return round(kb * 1024 / 1e6, 2) if kb is not None else None


def _rss_mb() -> float | None:
    return _mb(_status_kb("VmRSS"))


def _spin(seconds: float) -> None:
    """Busy-wait (test-only slowdowns): sleep() is too coarse below a millisecond."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _measure_loop(session, feeds, measurement: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    extra_s = float(options.get("debug_extra_latency_ms") or 0.0) / 1000.0
    factor = float(options.get("debug_slowdown_factor") or 1.0)
    perf = time.perf_counter
    label0, feed0 = feeds[0]
    start = perf()
    session.infer(feed0)
    first_ms = (perf() - start) * 1000.0
    for i in range(int(measurement["warmup_iterations"])):
        session.infer(feeds[i % len(feeds)][1])
    min_iterations = int(measurement["min_iterations"])
    min_seconds = float(measurement["min_seconds"])
    samples: list[float] = []
    labels: list[int] = []
    n_feeds = len(feeds)
    began = perf()
    i = 0
    while i < min_iterations or perf() - began < min_seconds:
        k = i % n_feeds
        feed = feeds[k][1]
        t = perf()
        session.infer(feed)
        if factor != 1.0 or extra_s:
            _spin((perf() - t) * (factor - 1.0) + extra_s)
        samples.append(round((perf() - t) * 1000.0, 6))  # ns resolution keeps the report small
        labels.append(k)
        i += 1
    return {
        "first_inference_ms": first_ms,
        "samples_ms": samples,
        "sample_feed": labels,
        "feeds": [label for label, _ in feeds],
        "measure_seconds": perf() - began,
    }


def _generate_loop(
    session, workload: dict[str, Any], measurement: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    factor = float(options.get("debug_slowdown_factor") or 1.0)
    extra_s = float(options.get("debug_extra_latency_ms") or 0.0) / 1000.0
    prompt = session.prompt(int(workload["prompt_tokens"]))
    n_gen = int(workload["generate_tokens"])
    perf = time.perf_counter
    ttft_s, total_s = session.generate(prompt, n_gen)
    first_ms = total_s * 1000.0
    for _ in range(int(measurement["warmup_iterations"])):
        session.generate(prompt, n_gen)
    samples, ttft, decode_tps = [], [], []
    began = perf()
    i = 0
    while i < int(measurement["min_iterations"]) or perf() - began < float(measurement["min_seconds"]):
        t = perf()
        ttft_s, total_s = session.generate(prompt, n_gen)
        if factor != 1.0 or extra_s:
            _spin((perf() - t) * (factor - 1.0) + extra_s)
        elapsed = perf() - t
        # the test-only slowdown stretches the whole request, so both figures move with it
        scale = elapsed / total_s if total_s > 0 else 1.0
        samples.append(elapsed * 1000.0)
        ttft.append(ttft_s * scale * 1000.0)
        decode_s = (total_s - ttft_s) * scale
        decode_tps.append((n_gen - 1) / decode_s if decode_s > 0 else float("inf"))
        i += 1
    return {
        "first_inference_ms": first_ms,
        "samples_ms": samples,
        "ttft_ms": ttft,
        "decode_tokens_per_s": decode_tps,
        "prompt_tokens": len(prompt),
        "generate_tokens": n_gen,
        "measure_seconds": perf() - began,
    }


def run_job(job: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    import numpy as np

    from edgedistill.bench.runtimes import get_runtime

    artifact, options, workload = job["artifact"], job["options"], job["workload"]
    memory: dict[str, Any] = {"rss_start_mb": _rss_mb()}
    t = time.perf_counter()
    runtime = get_runtime(artifact["runtime"])
    # import the runtime's own package now, so its import is not counted as session creation
    for module, _extra in runtime.requires:
        __import__(module)
    import_ms = (time.perf_counter() - t) * 1000.0
    memory["rss_after_import_mb"] = _rss_mb()
    t = time.perf_counter()
    session = runtime.load(artifact, options, workload)
    session_ms = (time.perf_counter() - t) * 1000.0
    memory["rss_after_load_mb"] = _rss_mb()
    session.read_back()  # what the runtime says it runs, outside the timed session creation
    result: dict[str, Any] = {
        "import_ms": import_ms,
        "session_create_ms": session_ms,
        "effective_options": session.effective,
        "runtime_info": session.runtime_info,
        "ran": session.ran,
        "precision_policy": session.precision_policy,
    }
    if job["kind"] == "latency":
        if artifact["task"] == "text-generation" and session.supports_generate:
            result.update(_generate_loop(session, workload, job["measurement"], options))
        else:
            feeds = session.workload_feeds(workload)
            result.update(_measure_loop(session, feeds, job["measurement"], options))
    elif job["kind"] == "accuracy":
        texts = json.loads(Path(job["texts_file"]).read_text(encoding="utf-8"))
        texts = [tuple(t) if isinstance(t, list) else t for t in texts]
        size, max_length = int(workload["eval_batch_size"]), int(workload["eval_max_length"])
        extra = list(artifact.get("extra_outputs") or [])  # a generalist's outputs beside the task's
        t = time.perf_counter()
        rows = [
            session.predict_outputs(texts[i : i + size], max_length)
            if extra
            else {"prediction": session.predict(texts[i : i + size], max_length)}
            for i in range(0, len(texts), size)
        ]
        predict_seconds = time.perf_counter() - t
        predictions = np.concatenate([r["prediction"] for r in rows], axis=0).astype(np.float32)
        np.save(out_dir / "predictions.npy", predictions)
        output_files = {}
        for name in extra:
            np.save(
                out_dir / f"{name}.npy", np.concatenate([r[name] for r in rows], axis=0).astype(np.float32)
            )
            output_files[name] = str(out_dir / f"{name}.npy")
        result.update(
            predictions_file=str(out_dir / "predictions.npy"),
            predictions_shape=list(predictions.shape),
            output_files=output_files,
            predict_seconds=predict_seconds,
        )
    else:
        raise ValueError(f"unknown job kind {job['kind']!r}")
    memory["rss_end_mb"] = _rss_mb()
    memory["vmhwm_mb"] = _mb(_status_kb("VmHWM"))
    result["memory"] = memory
    session.close()
    return result


def main(argv: list[str]) -> int:
    job_file, result_file = Path(argv[1]), Path(argv[2])
    job = json.loads(job_file.read_text(encoding="utf-8"))
    cpus = job.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    applied = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        result = run_job(job, result_file.parent)
        result["ok"] = True
    except Exception as exc:  # every failure goes back to the parent as data
        from edgedistill.errors import EdgeDistillError

        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": None if isinstance(exc, EdgeDistillError) else traceback.format_exc(),
        }
    result["process"] = {
        "pid": os.getpid(),
        "cpus": applied,
        "threads_env": {
            k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        },
        "vmhwm_mb": _mb(_status_kb("VmHWM")),
        "wall_seconds": time.perf_counter() - _T0,
    }
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, result_file)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
