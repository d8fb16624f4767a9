"""A bounded GGUF header reader: every count checked against the bytes left before it is used.

It lives in the ground because two areas open GGUF files from elsewhere: export and the bench
check the files they wrote or were given (`edgedistill.export.gguf.header` re-exports it), and
compress checks a GGUF teacher before transformers parses it (`edgedistill.model_checks`).

llama.cpp and gguf-py trust the counts in a GGUF header (tensor count, KV count, array and
string lengths, dimensions); a hostile file can make them allocate without bound or read past
the end (CVE-2024-21802, CVE-2024-23605, CVE-2025-53630). `read_gguf_header` is run first,
before either of them opens the file: it reads the header with plain ``read`` calls, refuses
any count that the remaining file cannot hold, checks every tensor's type, dimensions, offset
and size against the data section, and raises `ArtifactError` naming the file, the byte offset
and the field (callers from other areas pass their own error class and fix). Its work and memory are bounded by the file's size (each element read consumes
at least one byte; numeric arrays are skipped, not read, and long arrays are summarised).
Type sizes come from the ``gguf`` package's constants.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edgedistill.errors import ArtifactError, EdgeDistillError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 64  # GGML_MAX_NAME, including the terminating NUL in llama.cpp
MAX_ARRAY_DEPTH = 2
KEPT_ARRAY_ITEMS = 16  # arrays longer than this are summarised (type, length), not kept
_MAX_ELEMENTS = 2**62  # llama.cpp refuses tensors whose element count overflows int64

# value type -> struct format of one scalar (STRING = 8, ARRAY = 9 handled apart)
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_FIX = "re-export it with `edgedistill export`, or replace it with a file written by a trusted tool"


@dataclass
class GGUFTensorInfo:
    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class GGUFHeader:
    path: Path
    version: int
    alignment: int
    data_offset: int
    file_bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[GGUFTensorInfo] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


@dataclass
class _Array:
    """A metadata array: its item type and length (items kept only when short)."""

    item_type: int
    length: int
    items: list[Any] | None = None


class _Reader:
    """``read`` that refuses to go past the end, and says where it was when it did."""

    def __init__(
        self,
        fh: BinaryIO,
        size: int,
        source: str,
        error: type[EdgeDistillError] = ArtifactError,
        fix: str = _FIX,
    ):
        self.fh, self.size, self.source, self.pos = fh, size, source, 0
        self.error, self.fix = error, fix

    def fail(self, what: str, offset: int | None = None) -> EdgeDistillError:
        at = self.pos if offset is None else offset
        return self.error(f"{self.source}: not a valid GGUF file at byte {at}: {what}; {self.fix}")

    @property
    def left(self) -> int:
        return self.size - self.pos

    def read(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left:
            raise self.fail(f"{what} needs {n} bytes but only {self.left} are left (truncated file?)")
        data = self.fh.read(n)
        if len(data) != n:
            raise self.fail(f"{what}: the file shrank while being read")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n < 0 or n > self.left:
            raise self.fail(f"{what} needs {n} bytes but only {self.left} are left (truncated file?)")
        self.pos += n
        self.fh.seek(self.pos)

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]

    def count(self, what: str, min_item_bytes: int) -> int:
        """A uint64 count, refused when the bytes left cannot hold that many items."""
        start = self.pos
        n = self.scalar("<Q", what)
        if n * min_item_bytes > self.left:
            raise self.fail(
                f"{what} is {n}, but the {self.left} bytes left can hold at most "
                f"{self.left // max(min_item_bytes, 1)}",
                start,
            )
        return n

    def string(self, what: str) -> str:
        start = self.pos
        n = self.count(f"{what} length", 1)
        raw = self.read(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8", start) from None


def _min_value_bytes(vtype: int) -> int:
    if vtype == _STRING:
        return 8
    if vtype == _ARRAY:
        return 12
    return struct.calcsize(_SCALARS[vtype])


def _value(r: _Reader, vtype: int, what: str, depth: int = 0) -> Any:
    if vtype in _SCALARS:
        return r.scalar(_SCALARS[vtype], what)
    if vtype == _STRING:
        return r.string(what)
    if vtype != _ARRAY:
        raise r.fail(f"{what} has unknown value type {vtype}", r.pos - 4)
    if depth >= MAX_ARRAY_DEPTH:
        raise r.fail(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH}")
    type_at = r.pos
    item_type = r.scalar("<I", f"{what} item type")
    if item_type not in _SCALARS and item_type not in (_STRING, _ARRAY):
        raise r.fail(f"{what} has unknown array item type {item_type}", type_at)
    n = r.count(f"{what} array length", _min_value_bytes(item_type))
    if item_type in _SCALARS:
        width = struct.calcsize(_SCALARS[item_type])
        if n <= KEPT_ARRAY_ITEMS:
            return _Array(item_type, n, [r.scalar(_SCALARS[item_type], what) for _ in range(n)])
        r.skip(n * width, what)
        return _Array(item_type, n)
    kept: list[Any] = []
    for i in range(n):  # read (bounded by the bytes left), kept only when the array is short
        item = _value(r, item_type, f"{what}[{i}]", depth + 1)
        if n <= KEPT_ARRAY_ITEMS:
            kept.append(item)
    return _Array(item_type, n, kept if n <= KEPT_ARRAY_ITEMS else None)


def _type_sizes() -> dict[int, tuple[int, int]]:
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:
        from edgedistill.errors import MissingDependencyError

        raise MissingDependencyError("gguf", "gguf", "Checking a GGUF file") from None

    return {int(k): (int(v[0]), int(v[1])) for k, v in GGML_QUANT_SIZES.items()}


def read_gguf_header(
    path: str | Path, *, error: type[EdgeDistillError] = ArtifactError, fix: str = _FIX
) -> GGUFHeader:
    """Read and check a GGUF file's header and tensor table; raise ``error`` (an `ArtifactError`
    unless the caller names another) with ``fix`` appended on anything off."""
    path = Path(path)
    source = str(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise error(f"{source}: cannot open the GGUF file ({exc.strerror}); {fix}") from None
    with fh:
        import os
        import stat

        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{source}: not a regular file; {fix}")
        return _read(_Reader(fh, st.st_size, source, error, fix), path)


def read_gguf_header_from(fh: BinaryIO, size: int, source: str) -> GGUFHeader:
    """The same checks on an open binary stream of ``size`` bytes (fuzzing, in-memory files)."""
    return _read(_Reader(fh, size, source), Path(source))


def _read(r: _Reader, path: Path) -> GGUFHeader:
    magic = r.read(4, "magic") if r.left >= 4 else None
    if magic != MAGIC:
        raise r.fail(f"magic is {magic!r}, not {MAGIC!r} (this is not a GGUF file)", 0)
    version = r.scalar("<I", "version")
    if version not in SUPPORTED_VERSIONS:
        raise r.fail(f"GGUF version {version} is not supported (this reader takes {SUPPORTED_VERSIONS})", 4)
    # minimal sizes: a tensor info is name length + n_dims + type + offset; a KV is key length + type + 1
    n_tensors = r.count("tensor count", 8 + 4 + 4 + 8)
    n_kv = r.count("metadata KV count", 8 + 4 + 1)
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key_at = r.pos
        key = r.string(f"metadata key #{i}")
        if key in metadata:
            raise r.fail(f"metadata key {key!r} appears twice", key_at)
        vtype = r.scalar("<I", f"value type of {key!r}")
        metadata[key] = _value(r, vtype, f"metadata {key!r}")
    alignment = metadata.get("general.alignment", 32)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise r.fail(f"general.alignment {alignment!r} is not a positive power of two")
    sizes = _type_sizes()
    infos = []
    names: set[str] = set()
    for i in range(n_tensors):
        at = r.pos
        name = r.string(f"tensor #{i} name")
        if len(name.encode("utf-8")) >= MAX_NAME_BYTES:
            raise r.fail(
                f"tensor #{i} name is {len(name.encode())} bytes (llama.cpp allows {MAX_NAME_BYTES - 1})", at
            )
        if name in names:
            raise r.fail(f"tensor {name!r} appears twice", at)
        names.add(name)
        n_dims = r.scalar("<I", f"tensor {name!r} dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"tensor {name!r} has {n_dims} dimensions (1..{MAX_DIMS} allowed)", r.pos - 4)
        dims = tuple(r.scalar("<Q", f"tensor {name!r} dimension {d}") for d in range(n_dims))
        type_at = r.pos
        ggml_type = r.scalar("<I", f"tensor {name!r} type")
        offset = r.scalar("<Q", f"tensor {name!r} offset")
        if ggml_type not in sizes:
            raise r.fail(f"tensor {name!r} has unknown GGML type {ggml_type}", type_at)
        elements = 1
        for d in dims:
            if d == 0 or d > _MAX_ELEMENTS or elements * d > _MAX_ELEMENTS:
                raise r.fail(
                    f"tensor {name!r} dimensions {list(dims)} are zero or overflow 2^62 elements", at
                )
            elements *= d
        block, type_bytes = sizes[ggml_type]
        if dims[0] % block:
            raise r.fail(
                f"tensor {name!r} row of {dims[0]} is not a multiple of its type's block of {block}", at
            )
        if offset % alignment:
            raise r.fail(
                f"tensor {name!r} offset {offset} is not a multiple of the alignment {alignment}", at
            )
        infos.append(GGUFTensorInfo(name, dims, ggml_type, offset, elements // block * type_bytes))
    data_offset = -(-r.pos // alignment) * alignment
    data_bytes = r.size - data_offset
    for t in infos:
        if t.offset + t.nbytes > data_bytes:
            raise r.fail(
                f"tensor {t.name!r} data [{t.offset}, {t.offset + t.nbytes}) ends past the data section's "
                f"{max(data_bytes, 0)} bytes (truncated file or a hostile offset)",
                data_offset + t.offset,
            )
    return GGUFHeader(path, version, alignment, data_offset, r.size, metadata, infos)


def gguf_context_length(header: GGUFHeader) -> int | None:
    """``<arch>.context_length`` from a checked header (None when absent)."""
    arch = header.get("general.architecture")
    value = header.get(f"{arch}.context_length") if isinstance(arch, str) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def ggml_type_names(header: GGUFHeader) -> dict[str, int]:
    """How many tensors of each GGML type (``{"Q4_1": 210, "F32": 61}``), most frequent first."""
    from gguf.constants import GGMLQuantizationType

    counts: dict[str, int] = {}
    for t in header.tensors:
        name = GGMLQuantizationType(t.ggml_type).name  # known: `_read` refused unknown types
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def gguf_file_type(header: GGUFHeader) -> str | None:
    """``general.file_type`` by name (``MOSTLY_Q4_1``), its number when gguf does not know it, or None."""
    value = header.get("general.file_type")
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    from gguf.constants import LlamaFileType

    try:
        return LlamaFileType(value).name
    except ValueError:
        return str(value)


def gguf_parameter_count(header: GGUFHeader) -> int:
    """Elements over all tensors (what a dequantized copy holds)."""
    total = 0
    for t in header.tensors:
        n = 1
        for d in t.dims:
            n *= d
        total += n
    return total
