"""Property-based fuzz of the GGUF header reader and the manifest reader (small bounded runs).

Random bytes and mutated valid files: only ArtifactError may come out, within a deadline.
The big run (10,000+ inputs per reader) is benchmarks/fuzz_artifacts.py.
"""

from __future__ import annotations

import json
import resource
import struct

import pytest
from _artifacts_fuzz import fuzz_gguf, fuzz_manifest, valid_manifest
from _artifacts_helpers import gguf_bytes, kv_array, kv_string, kv_u32, tensor_info

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("gguf")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=list(HealthCheck), database=None)

SEED_GGUF = gguf_bytes(
    kvs=[
        kv_string("general.architecture", "bert"),
        kv_u32("bert.context_length", 512),
        kv_array("tokenizer.ggml.tokens", 8, 2, struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 1) + b"b"),
        kv_array("tokenizer.ggml.scores", 6, 2, struct.pack("<2f", 0.5, 0.25)),
    ],
    tensors=[tensor_info("a", [4], 0, 0), tensor_info("b", [2, 2], 0, 32)],
    data=struct.pack("<4f", 1, 2, 3, 4) + b"\0" * 16 + struct.pack("<4f", 1, 2, 3, 4),
)
SEED_MANIFEST = valid_manifest()


def _mutate(seed: bytes):
    """Mutations of a valid file: byte overwrites (often with huge counts), truncation, insertion."""

    @st.composite
    def mutated(draw) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["byte", "u64", "cut", "insert"]))
            pos = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "byte" and data:
                data[pos] = draw(st.integers(0, 255))
            elif kind == "u64":
                value = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**62, 2**64 - 1]))
                data[pos : pos + 8] = struct.pack("<Q", value)
            elif kind == "cut":
                del data[pos:]
            else:
                data[pos:pos] = draw(st.binary(max_size=16))
        return bytes(data)

    return mutated()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_seeds_are_valid():
    import io

    from edgedistill.export.gguf.header import read_gguf_header_from

    assert len(read_gguf_header_from(io.BytesIO(SEED_GGUF), len(SEED_GGUF), "seed").tensors) == 2
    fuzz_manifest(SEED_MANIFEST)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=512),
        st.binary(max_size=64).map(lambda b: b"GGUF\x03\0\0\0" + b),
        _mutate(SEED_GGUF),
    )
)
def test_fuzz_gguf_header_reader(data):
    before = _rss_mb()
    fuzz_gguf(data)
    assert _rss_mb() - before < 64  # bounded memory: no count was trusted


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = ["manifest_version", "format", "files", "model_files", "model_bytes", "inputs", "labels", "task"]


@st.composite
def _field_swaps(draw) -> bytes:
    manifest = json.loads(SEED_MANIFEST)
    for _ in range(draw(st.integers(1, 3))):
        manifest[draw(st.sampled_from(_FIELDS))] = draw(_JSON)
    if draw(st.booleans()):
        manifest["files"] = {
            draw(st.sampled_from(["../x", "/etc/hosts", "a/../../b", "ok.bin", ""])): {
                "sha256": "0" * 64,
                "bytes": 1,
            }
        }
    return json.dumps(manifest).encode()


@FUZZ
@given(st.one_of(st.binary(max_size=256), _mutate(SEED_MANIFEST), _field_swaps()))
def test_fuzz_manifest_reader(data):
    before = _rss_mb()
    fuzz_manifest(data)
    assert _rss_mb() - before < 64
