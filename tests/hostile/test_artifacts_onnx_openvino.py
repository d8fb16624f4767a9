"""Hostile ONNX and OpenVINO IR files: refused before any ONNX Runtime or OpenVINO session opens them."""

from __future__ import annotations

import os

import pytest
from _artifacts_helpers import copy, exported, rehash, set_external_location, to_external_data

from edgedistill.bench.artifact import open_artifact
from edgedistill.errors import ArtifactError


@pytest.fixture(scope="module")
def arts(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder):
    return exported(tmp_path_factory, tiny_bert_classifier, tiny_bert_encoder)


@pytest.fixture
def ext_dir(arts, tmp_path):
    folder = copy(arts["onnx"], tmp_path / "onnx-fp32")
    to_external_data(folder)
    return folder


@pytest.fixture
def ov_dir(arts, tmp_path):
    return copy(arts["openvino"], tmp_path / "openvino-fp32")


def _refused(folder, *needles: str) -> str:
    with pytest.raises(ArtifactError) as info:
        open_artifact(folder)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    return str(info.value)


def _no_session(monkeypatch):
    """Any ONNX Runtime session created during the check fails the test."""
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("an InferenceSession was created before the checks")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


# --------------------------------------------------------------------------- ONNX


def test_external_data_inside_the_folder_opens(ext_dir):
    assert open_artifact(ext_dir).model_files == ["model.onnx", "model.onnx.data"]


@pytest.mark.parametrize("location", ["../model.onnx.data", "sub/../../model.onnx.data"])
def test_external_data_location_climbing_out(ext_dir, location, monkeypatch):
    _no_session(monkeypatch)
    (ext_dir.parent / "model.onnx.data").write_bytes((ext_dir / "model.onnx.data").read_bytes())
    name = set_external_location(ext_dir, location)
    _refused(ext_dir, "model.onnx", name, "'..'")


def test_external_data_absolute_location(ext_dir, monkeypatch):
    _no_session(monkeypatch)
    set_external_location(ext_dir, "/etc/passwd")
    _refused(ext_dir, "/etc/passwd", "absolute")


def test_external_data_symlink_outside(ext_dir, tmp_path, monkeypatch):
    _no_session(monkeypatch)
    outside = tmp_path / "outside.data"
    outside.write_bytes((ext_dir / "model.onnx.data").read_bytes())
    os.symlink(outside, ext_dir / "link.data")
    set_external_location(ext_dir, "link.data")
    _refused(ext_dir, "link.data", "outside the artifact folder")


def test_external_data_truncated(ext_dir, monkeypatch):
    _no_session(monkeypatch)
    data = ext_dir / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    rehash(ext_dir)
    _refused(ext_dir, "runs past the end", "model.onnx.data (100 bytes)")


def test_external_data_offset_past_end(ext_dir, monkeypatch):
    _no_session(monkeypatch)
    set_external_location(ext_dir, "model.onnx.data", offset_shift=10**12)
    _refused(ext_dir, "runs past the end")


def test_external_data_missing_file(ext_dir):
    set_external_location(ext_dir, "nowhere.data")
    _refused(ext_dir, "nowhere.data", "missing")


def test_not_an_onnx_file(arts, tmp_path):
    folder = copy(arts["onnx"], tmp_path / "onnx-fp32")
    (folder / "model.onnx").write_bytes(b"GGUF\x03\x00\x00\x00 definitely not protobuf \xff\xff\xff")
    rehash(folder)
    _refused(folder, "model.onnx", "not a readable ONNX model")


def test_truncated_protobuf(arts, tmp_path):
    folder = copy(arts["onnx"], tmp_path / "onnx-fp32")
    raw = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(raw[: len(raw) // 3])
    rehash(folder)
    _refused(folder, "model.onnx")


def test_foreign_onnx_folder_is_checked_too(ext_dir):
    (ext_dir / "manifest.json").unlink()
    set_external_location(ext_dir, "/etc/passwd", resign=False)
    _refused(ext_dir, "/etc/passwd", "absolute")


# --------------------------------------------------------------------------- OpenVINO IR


def test_ir_not_xml(ov_dir):
    (ov_dir / "openvino_model.xml").write_bytes(b"\x00\x01 binary junk <net")
    rehash(ov_dir)
    _refused(ov_dir, "openvino_model.xml", "not well-formed XML")


def test_ir_entity_bomb_is_refused_without_expanding(ov_dir):
    bomb = '<?xml version="1.0"?>\n<!DOCTYPE net [<!ENTITY a "aaaaaaaaaa">'
    bomb += "".join(f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">' for i in range(9))
    bomb += ']>\n<net name="x">&a8;</net>\n'
    (ov_dir / "openvino_model.xml").write_text(bomb)
    rehash(ov_dir)
    _refused(ov_dir, "openvino_model.xml", "DTD")


def test_ir_const_past_bin_end(ov_dir):
    xml = ov_dir / "openvino_model.xml"
    text = xml.read_text()
    size = (ov_dir / "openvino_model.bin").stat().st_size
    first = text.index('offset="')
    end = text.index('"', first + 8)
    xml.write_text(text[: first + 8] + str(size + 4096) + text[end:])
    rehash(ov_dir)
    _refused(ov_dir, "Const layer", "runs past the end of openvino_model.bin")


def test_ir_bin_truncated(ov_dir):
    b = ov_dir / "openvino_model.bin"
    b.write_bytes(b.read_bytes()[:64])
    rehash(ov_dir)
    _refused(ov_dir, "openvino_model.bin (64 bytes)")


def test_ir_missing_bin(ov_dir):
    (ov_dir / "openvino_model.bin").unlink()
    rehash(ov_dir, ["openvino_model.xml"])
    _refused(ov_dir, "openvino_model.bin", "missing")


def test_ir_bin_symlink_outside(ov_dir, tmp_path):
    b = ov_dir / "openvino_model.bin"
    outside = tmp_path / "weights.bin"
    outside.write_bytes(b.read_bytes())
    b.unlink()
    os.symlink(outside, b)
    rehash(ov_dir)
    _refused(ov_dir, "openvino_model.bin", "outside the artifact folder")


def test_ir_root_is_not_net(ov_dir):
    (ov_dir / "openvino_model.xml").write_text("<html><body>hi</body></html>")
    rehash(ov_dir)
    _refused(ov_dir, "<html>", "not an OpenVINO IR")


def test_bench_exits_2_when_the_runtime_cannot_load_a_checked_file(arts, tmp_path, capsys):
    """A well-formed file ONNX Runtime refuses (an op it lacks): the entry errors and bench exits 2, not 0."""
    import onnx
    from bench_helpers import write_target

    from edgedistill.bench.cli import main

    folder = copy(arts["onnx"], tmp_path / "onnx-fp32")
    model = onnx.load(str(folder / "model.onnx"))
    model.graph.node[0].op_type = "NoSuchOpAnywhere"
    onnx.save_model(model, str(folder / "model.onnx"))
    rehash(folder)
    out = tmp_path / "r.json"
    fast = ["--set", "measurement.min_iterations=2", "--set", "measurement.min_seconds=0", "--quiet"]
    code = main(["bench", str(folder), "--target", str(write_target(tmp_path)), "--out", str(out), *fast])
    err = capsys.readouterr().err
    import json

    assert code == 2 and "could not be measured" in err
    assert json.loads(out.read_text())["artifacts"][0]["status"] == "error"
