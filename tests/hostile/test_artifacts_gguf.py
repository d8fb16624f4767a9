"""Hostile GGUF files: the bounded header reader refuses them before llama.cpp or gguf-py opens them."""

from __future__ import annotations

import struct
import time

import pytest
from _artifacts_helpers import (
    copy,
    exported,
    gguf_bytes,
    gstr,
    kv_array,
    kv_string,
    kv_u32,
    manifest,
    tensor_info,
    write_gguf_artifact,
)

from edgedistill.bench.artifact import open_artifact
from edgedistill.errors import ArtifactError
from edgedistill.export.gguf.header import read_gguf_header

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def arts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder):
    return exported(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder)


@pytest.fixture(scope="module")
def real_gguf(arts) -> bytes:
    folder = arts["gguf"]
    return (folder / manifest(folder)["model_files"][0]).read_bytes()


def _refused(tmp_path, data: bytes, *needles: str) -> str:
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(ArtifactError) as info:
        read_gguf_header(path)
    assert time.perf_counter() - start < 2.0  # bounded: no count is trusted
    message = str(info.value)
    assert "m.gguf" in message and "byte" in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_the_exported_file_reads_back(real_gguf, tmp_path):
    (tmp_path / "m.gguf").write_bytes(real_gguf)
    header = read_gguf_header(tmp_path / "m.gguf")
    assert header.get("general.architecture") == "bert" and len(header.tensors) > 10
    assert header.data_offset + max(t.offset + t.nbytes for t in header.tensors) <= len(real_gguf)


def test_the_crafted_minimal_file_reads_back(tmp_path):
    (tmp_path / "m.gguf").write_bytes(gguf_bytes())
    assert read_gguf_header(tmp_path / "m.gguf").tensors[0].nbytes == 16


def test_wrong_magic(tmp_path):
    _refused(tmp_path, gguf_bytes(magic=b"GGML"), "magic", "not a GGUF file")


def test_empty_file(tmp_path):
    _refused(tmp_path, b"", "magic")


@pytest.mark.parametrize("version", [1, 4, 0xFFFFFFFF])
def test_unsupported_version(tmp_path, version):
    _refused(tmp_path, gguf_bytes(version=version), f"version {version}")


def test_truncated_at_every_section(real_gguf, tmp_path):
    header_end = read_gguf_header_bytes(real_gguf, tmp_path).data_offset
    cuts = sorted(
        {2, 6, 12, 20, 30, 60, 500, header_end // 2, header_end - 1, header_end + 8, len(real_gguf) - 1}
    )
    for cut in cuts:
        _refused(tmp_path, real_gguf[:cut])


def read_gguf_header_bytes(data: bytes, tmp_path):
    (tmp_path / "whole.gguf").write_bytes(data)
    return read_gguf_header(tmp_path / "whole.gguf")


def test_absurd_tensor_count(tmp_path):
    _refused(tmp_path, gguf_bytes(n_tensors=2**63), "tensor count is 9223372036854775808")


def test_absurd_kv_count(tmp_path):
    _refused(tmp_path, gguf_bytes(n_kv=2**40), "metadata KV count")


def test_absurd_array_length(tmp_path):
    kv = kv_array("tokenizer.ggml.tokens", 8, 2**61)  # strings: CVE-2024-21802 style
    _refused(tmp_path, gguf_bytes(kvs=[kv]), "array length")


def test_absurd_numeric_array_length(tmp_path):
    kv = kv_array("tokenizer.ggml.scores", 6, 2**62 // 4)
    _refused(tmp_path, gguf_bytes(kvs=[kv]), "array length")


def test_absurd_string_length(tmp_path):
    kv = gstr("general.name") + struct.pack("<IQ", 8, 2**64 - 1)
    _refused(tmp_path, gguf_bytes(kvs=[kv]), "length")


def test_absurd_key_length(tmp_path):
    kv = struct.pack("<Q", 2**63) + b"general.architecture"
    _refused(tmp_path, gguf_bytes(kvs=[kv]), "metadata key #0 length")


def test_nested_arrays_are_bounded(tmp_path):
    inner = struct.pack("<IQ", 9, 1) * 8  # array of array of array ...
    _refused(tmp_path, gguf_bytes(kvs=[kv_array("x", 9, 1, inner)]), "nests arrays")


def test_unknown_value_type(tmp_path):
    _refused(
        tmp_path, gguf_bytes(kvs=[gstr("x") + struct.pack("<I", 99) + b"\0" * 8]), "unknown value type 99"
    )


def test_duplicate_key(tmp_path):
    kv = kv_string("general.architecture", "bert")
    _refused(tmp_path, gguf_bytes(kvs=[kv, kv]), "appears twice")


def test_tensor_offset_past_end(tmp_path):
    _refused(tmp_path, gguf_bytes(tensors=[tensor_info("t", [4], 0, 2**40)]), "ends past the data section")


def test_tensor_data_short(tmp_path):
    _refused(tmp_path, gguf_bytes(data=b"\0" * 8), "tensor 't' data [0, 16)")


def test_dims_overflow(tmp_path):
    t = tensor_info("t", [2**32, 2**32, 2**32], 0, 0)
    _refused(tmp_path, gguf_bytes(tensors=[t]), "overflow")


def test_zero_dim(tmp_path):
    _refused(tmp_path, gguf_bytes(tensors=[tensor_info("t", [0], 0, 0)]), "zero")


@pytest.mark.parametrize("n_dims", [0, 5, 2**31])
def test_bad_dimension_count(tmp_path, n_dims):
    _refused(tmp_path, gguf_bytes(tensors=[tensor_info("t", [4], 0, 0, n_dims=n_dims)]))


def test_unknown_tensor_type(tmp_path):
    _refused(tmp_path, gguf_bytes(tensors=[tensor_info("t", [4], 999, 0)]), "unknown GGML type 999")


def test_row_not_a_block_multiple(tmp_path):
    _refused(tmp_path, gguf_bytes(tensors=[tensor_info("t", [33], 8, 0)]), "block of 32")  # Q8_0


def test_tensor_name_too_long(tmp_path):
    _refused(tmp_path, gguf_bytes(tensors=[tensor_info("t" * 100, [4], 0, 0)]), "name is 100 bytes")


def test_bad_alignment(tmp_path):
    kvs = [kv_string("general.architecture", "bert"), kv_u32("general.alignment", 3)]
    _refused(tmp_path, gguf_bytes(kvs=kvs), "general.alignment")


def test_misaligned_tensor_offset(tmp_path):
    _refused(tmp_path, gguf_bytes(tensors=[tensor_info("t", [4], 0, 5)]), "alignment")


def test_bench_cli_refuses_a_malformed_gguf_with_exit_2(arts, tmp_path, capsys):
    """Before: llama.cpp's loader raised inside the worker, the report said IndexError and bench exited 0."""
    from bench_helpers import write_target

    from edgedistill.bench.cli import main

    folder = copy(arts["gguf"], tmp_path / "gguf")
    good = (folder / manifest(folder)["model_files"][0]).read_bytes()
    bad = bytearray(good)
    bad[16:24] = struct.pack("<Q", 2**40)  # KV count
    path = write_gguf_artifact(folder, bytes(bad))
    code = main(
        ["bench", str(folder), "--target", str(write_target(tmp_path)), "--out", str(tmp_path / "r.json")]
    )
    err = capsys.readouterr().err
    assert code == 2 and path.name in err and "byte 16" in err and "KV count" in err


def test_open_artifact_runs_the_header_check(arts, tmp_path):
    folder = copy(arts["gguf"], tmp_path / "gguf")
    write_gguf_artifact(folder, gguf_bytes(n_tensors=2**50))
    with pytest.raises(ArtifactError, match="tensor count"):
        open_artifact(folder)


def test_export_summary_reader_checks_first(tmp_path):
    from edgedistill.export.gguf import read_gguf_summary

    path = tmp_path / "x.gguf"
    path.write_bytes(gguf_bytes(kvs=[kv_array("a", 8, 2**60)]))
    with pytest.raises(ArtifactError, match="array length"):
        read_gguf_summary(path)
