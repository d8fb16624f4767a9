"""Checks an artifact's model files pass before any runtime opens them: nothing outside the folder, nothing past an end.

Runtimes trust what a model file says: an ONNX tensor's external-data ``location`` (which
ONNX Runtime resolves, ``..`` and symlinks included: CVE-2024-27318), the ``offset``/``size``
of an OpenVINO ``Const`` in its ``.bin``, a GGUF header's counts. These checks read the files
with bounded parsers first (ONNX without external data, the IR's XML with DTDs refused, the
GGUF header with `edgedistill.export.gguf.header`) and raise `ArtifactError` naming the file,
the tensor or byte offset, and what to do, so a hostile or damaged artifact never reaches a
session. Every path an artifact names must resolve inside its folder, symlinks included.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from edgedistill.errors import ArtifactError

_FIX = "re-export the artifact with `edgedistill export`"
MAX_XML_BYTES = 256 * 2**20  # an IR's XML is a graph description, not weights


def inside(folder: Path, name: str, source: str, what: str = "path") -> Path:
    """``folder / name``, refused unless it is relative, has no ``..`` and resolves inside ``folder``."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise ArtifactError(f"{source}: {what} {name!r} is not a plain relative path; {_FIX}")
    pure = PurePosixPath(name)
    if pure.is_absolute() or os.path.isabs(name):
        raise ArtifactError(
            f"{source}: {what} {name!r} is absolute; an artifact may only name files in its folder"
        )
    if ".." in name.split("/") or ".." in pure.parts:
        raise ArtifactError(f"{source}: {what} {name!r} climbs out of the folder with '..'; {_FIX}")
    if "" in name.split("/") or "." in name.split("/"):
        raise ArtifactError(f"{source}: {what} {name!r} has an empty or '.' path component; {_FIX}")
    root = folder.resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ArtifactError(
            f"{source}: {what} {name!r} resolves to {target}, outside the artifact folder {root} "
            f"(a symlink?); copy the real file into the folder"
        )
    return target


def regular_file(path: Path, source: str, what: str) -> int:
    """The size of ``path``, refused unless it is a regular file (no FIFO, device or directory)."""
    try:
        st = path.stat()
    except OSError:
        raise ArtifactError(f"{source}: {what} {path.name} is missing; {_FIX}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"{source}: {what} {path.name} is not a regular file; {_FIX}")
    return st.st_size


def check_onnx(model_path: Path, folder: Path) -> None:
    """Parse the graph without its external data, then check each external tensor's file, offset and length."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import _get_all_tensors

    source = str(model_path)
    regular_file(model_path, source, "model file")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{source}: not a readable ONNX model ({type(exc).__name__}: {exc}); {_FIX}"
        ) from None
    if not model.HasField("graph") or not model.opset_import:
        raise ArtifactError(f"{source}: the ONNX model has no graph or no opset (truncated file?); {_FIX}")
    sizes: dict[Path, int] = {}
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        where = f"{source}: tensor {tensor.name!r}"
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location")
        if not location:
            raise ArtifactError(f"{where} is stored externally but names no location; {_FIX}")
        data_path = inside(folder, location, where, "external data location")
        if data_path not in sizes:
            sizes[data_path] = regular_file(data_path, where, "external data file")
        try:
            offset = int(info.get("offset") or 0)
            length = int(info["length"]) if "length" in info else sizes[data_path] - offset
        except ValueError:
            raise ArtifactError(f"{where}: external data offset/length are not integers; {_FIX}") from None
        if offset < 0 or length < 0 or offset + length > sizes[data_path]:
            raise ArtifactError(
                f"{where}: external data [offset {offset}, length {length}] runs past the end of "
                f"{location} ({sizes[data_path]} bytes): the file is truncated or the model hostile; {_FIX}"
            )


def check_openvino(xml_path: Path, folder: Path) -> None:
    """The IR's XML parsed with DTDs refused, its ``.bin`` present, every Const inside the ``.bin``."""
    import xml.etree.ElementTree as ET

    source = str(xml_path)
    size = regular_file(xml_path, source, "IR file")
    if size > MAX_XML_BYTES:
        raise ArtifactError(
            f"{source}: {size} bytes of XML is more than an IR holds ({MAX_XML_BYTES}); {_FIX}"
        )
    raw = xml_path.read_bytes()
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise ArtifactError(
            f"{source}: the XML declares a DTD or entities (entity expansion is refused); OpenVINO IR has none; {_FIX}"
        )
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ArtifactError(f"{source}: not well-formed XML ({exc}); {_FIX}") from None
    if root.tag != "net":
        raise ArtifactError(
            f"{source}: the root element is <{root.tag}>, not <net> (not an OpenVINO IR); {_FIX}"
        )
    bin_path = inside(folder, xml_path.with_suffix(".bin").name, source, "weights file")
    consts = [layer for layer in root.iter("layer") if layer.get("type") == "Const"]
    if not consts and not bin_path.exists():
        return
    bin_bytes = regular_file(bin_path, source, "weights file")
    for layer in consts:
        data = layer.find("data")
        if data is None or data.get("offset") is None:
            continue
        where = f"{source}: Const layer id={layer.get('id')} name={layer.get('name')!r}"
        try:
            offset, length = int(data.get("offset", "")), int(data.get("size", ""))
        except ValueError:
            raise ArtifactError(f"{where}: offset/size are not integers; {_FIX}") from None
        if offset < 0 or length < 0 or offset + length > bin_bytes:
            raise ArtifactError(
                f"{where}: data [offset {offset}, size {length}] runs past the end of {bin_path.name} "
                f"({bin_bytes} bytes): the .bin is truncated or the IR hostile; {_FIX}"
            )


def check_gguf(path: Path, folder: Path) -> None:
    from edgedistill.export.gguf.header import read_gguf_header

    read_gguf_header(path)


_CHECKS = {".onnx": check_onnx, ".xml": check_openvino, ".gguf": check_gguf}


def check_model_files(folder: str | Path, model_files: list[str], source: str | None = None) -> None:
    """Run the check each model file's kind has (by suffix); every name must lie inside ``folder``."""
    folder = Path(folder)
    for name in model_files:
        path = inside(folder, name, source or str(folder), "model file")
        check = _CHECKS.get(path.suffix.lower())
        if check is not None:
            check(path, folder)
