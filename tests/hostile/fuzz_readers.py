"""Fuzz the file readers: random and mutated inputs must end in the value or an EdgeDistillError,
never another exception, never a hang, never unbounded memory.

    python tests/hostile/fuzz_readers.py --examples 10000 --seconds 300      # `make fuzz`
    python tests/hostile/fuzz_readers.py --reader target --examples 500 --json out.json

`READERS` is the registry: a name -> `Reader(read, seeds, suffix)`. `read(path)` is the real
reader on a file; `seeds` are valid files the mutations start from (text or bytes alike), so a
new reader (GGUF, manifest) is one entry with its own seeds. Each input is written to a file and
read once; the counts, the slowest input's seconds and the peak RSS are printed (and written as
JSON with --json). Exit 1 when any input raised something other than an EdgeDistillError, or
took longer than --max-input-seconds; the first such inputs are saved beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Reader:
    read: Callable[[Path], Any]
    seeds: list[bytes]
    suffix: str = ".yaml"
    # Keys the structure generator draws from, so random mappings reach the validators.
    keys: list[str] = field(default_factory=list)


def _read_recipe(path: Path) -> Any:
    from edgedistill.compress.config import DistillRecipe
    from edgedistill.config import load_config

    return load_config(DistillRecipe, path)


def _read_target(path: Path) -> Any:
    from edgedistill.targets import load_target

    return load_target(path)


RECIPE_SEED = b"""version: 1
task: sequence-classification
teacher: {path: ./teacher, allow_pickle: false}
student: {layers: 2}
losses: [{name: soft_kl, weight: 1.0}, {name: hard_ce, weight: 0.5}]
temperature: {kind: linear, start: 4.0, end: 1.0}
alpha: {kind: constant, value: 0.7}
data: {train: train.tsv, eval: dev.tsv, max_length: 64, strict: true}
training: {max_steps: 10, lr: 5.0e-5, batch_size: 8, warmup_ratio: 0.1}
qat: {mode: int8, start_fraction: 0.5}
"""

READERS: dict[str, Reader] = {
    "recipe": Reader(
        _read_recipe,
        [RECIPE_SEED],
        keys=[
            "version",
            "task",
            "teacher",
            "path",
            "student",
            "layers",
            "losses",
            "name",
            "weight",
            "temperature",
            "kind",
            "value",
            "start",
            "end",
            "alpha",
            "data",
            "train",
            "training",
            "lr",
            "max_steps",
            "batch_size",
            "qat",
            "mode",
            "<<",
        ],
    ),  # fmt: skip
    "target": Reader(
        _read_target,
        [p.read_bytes() for p in sorted((ROOT / "targets").glob("*.yaml"))],
        keys=[
            "version",
            "name",
            "requires",
            "runtime",
            "threads",
            "workload",
            "batch_size",
            "sequence_lengths",
            "measurement",
            "min_seconds",
            "min_iterations",
            "warmup_iterations",
            "rounds",
            "timeout_s",
            "budgets",
            "p50_latency_ms",
            "regression",
            "formats",
            "<<",
        ],
    ),  # fmt: skip
}

SNIPPETS = [
    b"&a ", b"*a", b"<<: *a\n", b"!!python/object/apply:os.system ['true']", b"!!python/name:os.system",
    b"!custom ", b"[" * 80, b"{" * 80, b"]", b"}", b".inf", b"-.inf", b".nan", b"\x00", b"\xff\xfe",
    b"? ", b"- ", b": ", b"'", b'"', b"\t", b"%YAML 1.1\n", b"---\n", b"...\n", b"9" * 5000, b"0x" + b"f" * 400,
    b"1e400", b"-1", b"1000000000000", b"~", b"null", b"2001-12-14", b"!!binary AAAA", b"!!set {a}",
    b"\n  " * 3, b"#", b"|\n  x", b">\n  x", b"\xef\xbb\xbf", b"\r\n", b"\\u0000", b"name: ../../x\n",
]  # fmt: skip


def _random_value(rng: random.Random, keys: list[str], depth: int) -> Any:
    choice = rng.random()
    if depth <= 0 or choice < 0.45:
        return rng.choice(
            [None, True, False, 0, -1, 1, 2**40, 1e308, float("inf"), float("nan"), -0.0, "", "x", "../a",
             "a\x00b", rng.choice(keys) if keys else "k", rng.randint(-10, 10**6), rng.random() * 100]
        )  # fmt: skip
    if choice < 0.75:
        return {
            (rng.choice(keys) if keys and rng.random() < 0.8 else f"k{rng.randint(0, 9)}"): _random_value(
                rng, keys, depth - 1
            )
            for _ in range(rng.randint(0, 5))
        }
    return [_random_value(rng, keys, depth - 1) for _ in range(rng.randint(0, 5))]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randint(0, len(data)) if data else 0
        if op < 0.35:
            data[pos:pos] = rng.choice(SNIPPETS)
        elif op < 0.55 and data:
            data[min(pos, len(data) - 1)] = rng.randint(0, 255)
        elif op < 0.7:
            del data[pos : pos + rng.randint(1, 40)]
        elif op < 0.8:
            data = data[:pos]
        elif op < 0.9 and data:
            lines = bytes(data).split(b"\n")
            i = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[i])  # duplicate keys
            data = bytearray(b"\n".join(lines))
        else:
            data[pos:pos] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 16)))
    return bytes(data)


def generate(reader: Reader, rng: random.Random) -> bytes:
    """One input: a mutated seed, a random structure (as YAML, sometimes mutated), or random bytes."""
    kind = rng.random()
    if kind < 0.55 and reader.seeds:
        return _mutate(rng, rng.choice(reader.seeds))
    if kind < 0.92:
        value = _random_value(rng, reader.keys, rng.randint(1, 6))
        text = yaml.safe_dump(value, allow_unicode=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        return _mutate(rng, text) if rng.random() < 0.3 else text
    return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 200)))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_one(reader: Reader, data: bytes, path: Path) -> str:
    """'ok' or 'refused'; any other exception propagates (the fuzz's finding)."""
    from edgedistill.errors import EdgeDistillError

    path.write_bytes(data)
    try:
        reader.read(path)
    except EdgeDistillError:
        return "refused"
    return "ok"


def inputs(reader: Reader, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    while True:
        yield generate(reader, rng)


def fuzz(
    name: str, examples: int, seconds: float, seed: int, max_input_seconds: float, save: Path | None
) -> dict:
    reader = READERS[name]
    counts = {"ok": 0, "refused": 0, "crashed": 0, "slow": 0}
    slowest, started, crashes = 0.0, time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{reader.suffix}"
        for index, data in enumerate(inputs(reader, seed)):
            if index >= examples or time.perf_counter() - started > seconds:
                break
            t0 = time.perf_counter()
            try:
                counts[check_one(reader, data, path)] += 1
            except Exception:  # the finding: anything but an EdgeDistillError
                counts["crashed"] += 1
                crashes.append((data, traceback.format_exc(limit=3)))
            took = time.perf_counter() - t0
            slowest = max(slowest, took)
            if took > max_input_seconds:
                counts["slow"] += 1
                crashes.append((data, f"took {took:.2f} s"))
    result = {
        "reader": name,
        "inputs": sum(counts[k] for k in ("ok", "refused", "crashed")),
        **counts,
        "seconds": round(time.perf_counter() - started, 2),
        "slowest_input_s": round(slowest, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "seed": seed,
    }
    if save is not None:
        for i, (data, why) in enumerate(crashes[:5]):
            (save / f"{name}-finding-{i}.bin").write_bytes(data)
            (save / f"{name}-finding-{i}.txt").write_text(why)
    result["findings"] = [why.splitlines()[-1] for _data, why in crashes[:5]]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per reader")
    parser.add_argument("--seconds", type=float, default=600.0, help="budget per reader (stops early)")
    parser.add_argument("--reader", action="append", choices=sorted(READERS), help="default: all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-input-seconds", type=float, default=5.0, help="one input slower is a finding")
    parser.add_argument("--json", type=Path, help="write the results here (findings beside it)")
    args = parser.parse_args(argv)
    results = []
    for name in args.reader or sorted(READERS):
        save = args.json.parent if args.json else None
        result = fuzz(name, args.examples, args.seconds, args.seed, args.max_input_seconds, save)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["crashed"] or r["slow"] for r in results) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
