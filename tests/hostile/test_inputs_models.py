"""Hostile model folders: refused before anything is loaded or allocated, one ModelLoadError
naming the file, the field or byte offset and the fix; pickle payloads never run."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from _inputs_helpers import billion_laughs, bounded, cli, write  # noqa: F401  (pytest fixtures)

from edgedistill.compress.config import ModelSource
from edgedistill.compress.models import check_model_folder, load_model, load_tokenizer
from edgedistill.errors import ModelLoadError

TASK = "feature-extraction"


@pytest.fixture
def folder(tmp_path, tiny_bert_encoder) -> Path:
    """A private copy of the tiny encoder to damage."""
    return Path(shutil.copytree(tiny_bert_encoder, tmp_path / "model"))


def _refused(path: Path, *expected: str, allow_pickle=False, trust_remote_code=False) -> str:
    source = ModelSource(path=str(path), allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    with pytest.raises(ModelLoadError) as info:
        load_model(source, TASK)
    message = str(info.value)
    for part in expected:
        assert part in message, message
    return message


def _pickle_only(folder: Path, marker: Path) -> None:
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    state["payload"] = Payload()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")


@pytest.mark.parametrize("allow_pickle", [False, True], ids=["default", "allow_pickle"])
def test_pickle_payload_never_runs(folder, tmp_path, allow_pickle, bounded):
    marker = tmp_path / "PAYLOAD_RAN"
    _pickle_only(folder, marker)
    with bounded():
        message = _refused(
            folder, "pytorch_model.bin" if not allow_pickle else "weights_only", allow_pickle=allow_pickle
        )
    assert "safetensors" in message
    assert not marker.exists()


def _auto_map(folder: Path, model_type: str | None, marker: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    if model_type:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")


def test_auto_map_of_unknown_type_needs_trust_remote_code(folder, tmp_path):
    marker = tmp_path / "CODE_RAN"
    _auto_map(folder, "evil-model", marker)
    _refused(folder, "config.json", "auto_map", "'evil-model'", "trust_remote_code")
    assert not marker.exists()


def test_auto_map_of_native_type_loads_the_native_class_without_running_code(folder, tmp_path):
    marker = tmp_path / "CODE_RAN"
    _auto_map(folder, None, marker)  # model_type stays bert: transformers ignores auto_map
    assert type(load_model(ModelSource(path=str(folder)), TASK)).__name__ == "BertModel"
    assert not marker.exists()


def _write_safetensors(
    path: Path, header: bytes | dict, data: bytes = b"", length: int | None = None
) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)


SAFETENSORS_CASES = {
    "length_prefix_huge": (b"{}", b"", 1 << 60, ["byte 0", "header length 1152921504606846976"]),
    "header_not_json": (b"{not json", b"", None, ["byte 8", "not valid JSON"]),
    "header_a_list": (b"[1, 2]", b"", None, ["not a JSON object"]),
    "offsets_past_end": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None, ["tensor 'w'", "run past the 8 data bytes"]),
    "overlap": (
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
        b"\0" * 12, None, ["'a' [0, 8]", "'b' (from 4) overlap"],
    ),
    "size_mismatch": ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, ["8 bytes for shape [3] of F32"]),
    "bad_dtype": ({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16, None, ["unknown dtype 'F128'"]),
    "negative_shape": ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None, ["not non-negative integers"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_corrupt_safetensors_header(case, folder, bounded):
    header, data, length, expected = SAFETENSORS_CASES[case]
    _write_safetensors(folder / "model.safetensors", header, data, length)
    with bounded():
        _refused(folder, "model.safetensors", *expected)


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_export_refuses_the_same_corrupt_safetensors_headers(case, folder, bounded):
    """Issue 25: export had its own, weaker header check (a list header was "unexpected error (a
    bug)"; dtype, shape and overlap were not checked). It now runs the one distill runs."""
    from edgedistill.export.student import inspect_student

    header, data, length, expected = SAFETENSORS_CASES[case]
    _write_safetensors(folder / "model.safetensors", header, data, length)
    with bounded(), pytest.raises(ModelLoadError) as info:
        inspect_student(folder)
    for part in ("model.safetensors", *expected):
        assert part in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_size", 10**9), ("num_hidden_layers", 10**6), ("vocab_size", 10**12), ("hidden_size", "64")],
)
def test_export_refuses_absurd_configs_before_allocating(field, value, folder, bounded):
    """Issue 25: ``num_hidden_layers: 1e6`` / ``hidden_size: 1e9`` OOM-killed or confused export."""
    from edgedistill.export.student import inspect_student

    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with bounded(), pytest.raises(ModelLoadError) as info:
        inspect_student(folder)
    expected = f"{field}={value}" if isinstance(value, int) else f"field {field} is {value!r}"
    assert "config.json" in str(info.value) and expected in str(info.value), str(info.value)


def test_truncated_safetensors(folder):
    (folder / "model.safetensors").write_bytes(b"\x10\x00")
    _refused(folder, "model.safetensors", "shorter than the 8-byte header length")


def test_truncated_tail_of_real_safetensors(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(folder, "model.safetensors", "run past", "truncated")


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_size", 10**9), ("num_hidden_layers", 10**6), ("vocab_size", 10**12)],
)
def test_absurd_config_refused_before_allocating(field, value, folder, bounded):
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with bounded():
        message = _refused(folder, "config.json", f"{field}={value}", "GB for its weights", "available")
    assert "Check these fields" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"model_type": "bert",', "not valid JSON (line 1"),
        ("[1, 2, 3]", "a JSON list, expected an object"),
        ('{"model_type": "bert", "hidden_size": "64"}', "field hidden_size is '64'"),
        ('{"model_type": "bert", "num_hidden_layers": -2}', "field num_hidden_layers is -2"),
    ],
    ids=["truncated", "list", "string_size", "negative_size"],
)
def test_bad_config_json(text, expected, folder):
    (folder / "config.json").write_text(text)
    _refused(folder, "config.json", expected)


def test_huge_config_json(folder):
    (folder / "config.json").write_bytes(b'{"pad": "' + b"x" * (5 << 20) + b'"}')
    _refused(folder, "config.json", "bytes; a config.json is at most")


def test_missing_tokenizer_files(folder):
    for name in os.listdir(folder):
        if "token" in name or name == "vocab.txt":
            (folder / name).unlink()
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer(str(folder))
    assert str(folder) in str(info.value) and "tokenizer files" in str(info.value)


def test_valid_folder_still_loads(folder):
    assert check_model_folder(str(folder), "teacher", False) == folder
    assert load_model(ModelSource(path=str(folder)), TASK).config.hidden_size == 64


def test_cli_finetune_pickle_folder_exit_2_nothing_written(folder, tmp_path, cli, write):
    marker = tmp_path / "PAYLOAD_RAN"
    _pickle_only(folder, marker)
    data = write("d.tsv", "sentence\tlabel\n" + "a b c\t0\n" * 4)
    out = tmp_path / "out"
    rc, err = cli(
        "finetune", "--model", folder, "--train", data, "--eval", data, "--allow-pickle", "--out", out
    )
    assert rc == 2 and "weights_only" in err and "Traceback" not in err, err
    assert not out.exists() or not (out / "model").exists()
    assert not marker.exists()


def test_cli_distill_auto_map_exit_2_out_not_created(folder, tmp_path, cli, write):
    _auto_map(folder, "evil-model", tmp_path / "CODE_RAN")
    data = write("d.tsv", "sentence\tlabel\n" + "a b c\t0\n" * 4)
    out = tmp_path / "out"
    rc, err = cli("distill", "--teacher", folder, "--student-layers", "1", "--train", data, "--eval", data,
                  "--task", "feature-extraction", "--losses", "embedding_cosine:1", "--out", out)  # fmt: skip
    assert rc == 2 and "auto_map" in err, err
    assert not out.exists()


@pytest.mark.parametrize("case", ["header_a_list", "num_hidden_layers"])
def test_cli_export_of_a_hostile_student_is_one_line_exit_2(case, folder, tmp_path, cli):
    """Issue 25: a list-shaped safetensors header was "unexpected error ... (a bug)" at export."""
    if case == "header_a_list":
        _write_safetensors(folder / "model.safetensors", b"[1, 2]")
        expected = "not a JSON object"
    else:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**6}))
        expected = "GB for its weights"
    out = tmp_path / "artifacts"
    rc, err = cli("export", folder, "--format", "onnx", "--out", out)
    assert rc == 2 and expected in err and "unexpected error" not in err and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["header_a_list", "overlap", "num_hidden_layers", "meta_not_json"])
def test_bench_of_a_torch_model_folder_runs_the_same_checks(case, folder):
    """bench measures a plain model folder with the torch runtime: it opens it with the checks of
    every other verb (it read config.json alone, and swallowed a corrupt edgedistill.json)."""
    from edgedistill.bench.artifact import open_artifact
    from edgedistill.errors import EdgeDistillError

    if case in SAFETENSORS_CASES:
        header, data, length, expected = SAFETENSORS_CASES[case]
        _write_safetensors(folder / "model.safetensors", header, data, length)
    elif case == "num_hidden_layers":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**6}))
        expected = ["config.json", "GB for its weights"]
    else:
        (folder / "edgedistill.json").write_text('{"task": ')
        expected = ["edgedistill.json", "not valid JSON"]
    with pytest.raises(EdgeDistillError) as info:
        open_artifact(folder)
    for part in expected:
        assert part in str(info.value), str(info.value)
