"""Hostile manifests: every one refused with an ArtifactError naming the file and the field, never "verified"."""

from __future__ import annotations

import json
import os

import pytest
from _artifacts_helpers import copy, exported, manifest, rehash, write_manifest

from edgedistill.bench.artifact import open_artifact
from edgedistill.errors import ArtifactError, EdgeDistillError


@pytest.fixture(scope="module")
def arts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder):
    return exported(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder)


@pytest.fixture
def onnx_dir(arts, tmp_path):
    return copy(arts["onnx"], tmp_path / "onnx-fp32")


def _refused(folder, *needles: str) -> str:
    with pytest.raises(ArtifactError) as info:
        open_artifact(folder)
    message = str(info.value)
    assert info.value.exit_code == 2
    for needle in needles:
        assert needle in message, message
    return message


def test_the_untouched_export_opens_verified(onnx_dir):
    assert open_artifact(onnx_dir).describe()["manifest"]["verified"] is True


def test_missing_manifest_is_never_verified(onnx_dir):
    (onnx_dir / "manifest.json").unlink()
    # config.json + one *.onnx: a foreign ONNX folder, measured but said unverified
    assert open_artifact(onnx_dir).describe()["manifest"]["verified"] is False
    (onnx_dir / "config.json").unlink()
    with pytest.raises(EdgeDistillError, match="no manifest.json"):
        open_artifact(onnx_dir)


def test_manifest_not_json(onnx_dir):
    write_manifest(onnx_dir, b"\x89PNG\r\n not json")
    _refused(onnx_dir, "manifest.json", "JSON")


def test_manifest_truncated_names_line_and_column(onnx_dir):
    raw = (onnx_dir / "manifest.json").read_bytes()
    write_manifest(onnx_dir, raw[: len(raw) // 2])
    _refused(onnx_dir, "manifest.json", "line", "column", "truncated")


@pytest.mark.parametrize("body", ["[]", '"a string"', "null", "42"])
def test_manifest_not_an_object(onnx_dir, body):
    write_manifest(onnx_dir, body)
    _refused(onnx_dir, "manifest.json", "not an object")


@pytest.mark.parametrize("field", ["format", "precision", "task", "files", "model_files"])
def test_manifest_missing_field(onnx_dir, field):
    data = manifest(onnx_dir)
    del data[field]
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, "manifest.json", f"{field}: missing")


@pytest.mark.parametrize(
    ("field", "value"),
    [("files", ["model.onnx"]), ("model_files", "model.onnx"), ("format", 3), ("inputs", {"a": 1})],
)
def test_manifest_wrong_types(onnx_dir, field, value):
    data = manifest(onnx_dir)
    data[field] = value
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, "manifest.json", field)


def test_manifest_file_entry_without_hash(onnx_dir):
    data = manifest(onnx_dir)
    data["files"]["model.onnx"] = {"bytes": -1}
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, "files['model.onnx']", "sha256")


def test_manifest_nan_figure_is_refused(onnx_dir):
    text = (onnx_dir / "manifest.json").read_text().replace('"model_bytes": ', '"model_bytes": NaN, "x": ', 1)
    write_manifest(onnx_dir, text)
    _refused(onnx_dir, "manifest.json", "NaN")


@pytest.mark.parametrize("version", [2, 0, "1", None, True])
def test_another_manifest_version(onnx_dir, version):
    data = manifest(onnx_dir)
    data["manifest_version"] = version
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, "manifest_version", "version 1")


def test_file_changed_after_export_is_a_hash_mismatch(onnx_dir):
    path = onnx_dir / "model.onnx"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    _refused(onnx_dir, "model.onnx", "sha256 differs", "re-export")


def test_file_grown_after_export_is_a_size_mismatch(onnx_dir):
    with open(onnx_dir / "tokenizer.json", "ab") as fh:
        fh.write(b" ")
    _refused(onnx_dir, "tokenizer.json", "sha256 differs", "bytes, the manifest says")


def test_extra_file_not_in_manifest(onnx_dir):
    (onnx_dir / "payload.py").write_text("print('hi')")
    _refused(onnx_dir, "payload.py: not in the manifest")


@pytest.mark.parametrize("name", ["../outside.bin", "sub/../../outside.bin", "/etc/passwd", "a//b", "./x"])
def test_manifest_naming_a_path_outside_the_folder(onnx_dir, name):
    data = manifest(onnx_dir)
    data["files"][name] = {"sha256": "0" * 64, "bytes": 0}
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, repr(name))


def test_model_files_naming_an_unlisted_file(onnx_dir):
    data = manifest(onnx_dir)
    data["model_files"] = ["../../etc/passwd"]
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, "model_files", "etc/passwd")


def test_symlink_resolving_outside_the_folder_is_refused(onnx_dir, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    os.symlink(outside, onnx_dir / "vocab_extra.txt")
    rehash(onnx_dir)  # the manifest even lists it with the right hash
    _refused(onnx_dir, "vocab_extra.txt", "outside the artifact folder")


def test_symlink_to_a_fifo_is_refused_before_hashing(onnx_dir):
    fifo = onnx_dir / "pipe"
    os.mkfifo(fifo)  # hashing it would block forever
    data = manifest(onnx_dir)
    data["files"]["pipe"] = {"sha256": "0" * 64, "bytes": 0}
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, "pipe", "not a regular file")


def test_symlinked_folder_is_refused(onnx_dir, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.bin").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", onnx_dir / "extra")
    _refused(onnx_dir, "extra")


def test_bad_input_dtype_is_refused(onnx_dir):
    data = manifest(onnx_dir)
    data["inputs"][0]["dtype"] = "object"
    write_manifest(onnx_dir, data)
    _refused(onnx_dir, "inputs[0].dtype")


def test_cli_bench_on_a_hostile_manifest_exits_2_naming_the_file(onnx_dir, tmp_path, capsys):
    from bench_helpers import write_target

    from edgedistill.bench.cli import main

    data = manifest(onnx_dir)
    data["files"]["../x"] = {"sha256": "0" * 64, "bytes": 1}
    write_manifest(onnx_dir, data)
    code = main(
        ["bench", str(onnx_dir), "--target", str(write_target(tmp_path)), "--out", str(tmp_path / "r.json")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "manifest.json" in err and "'../x'" in err
    assert not (tmp_path / "r.json").exists()


def test_verify_manifest_reads_no_file_it_may_not(onnx_dir):
    """json.dumps of a valid manifest round-trips: the reader is strict, not lossy."""
    from edgedistill.export.manifest import read_manifest

    assert read_manifest(onnx_dir) == json.loads((onnx_dir / "manifest.json").read_text())
