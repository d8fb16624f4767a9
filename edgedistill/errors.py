"""One error hierarchy for the toolkit: every message says what went wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence


class EdgeDistillError(Exception):
    """Base class for every error edgedistill raises on purpose (the CLI prints these without a traceback)."""

    exit_code = 2


class ConfigError(EdgeDistillError):
    """A recipe or target file is invalid. Holds *every* problem found, each with its key path."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {len(self.problems)} problem(s):"]
        lines += [f"  - {path or '<root>'}: {msg}" for path, msg in self.problems]
        super().__init__("\n".join(lines))


class DataError(EdgeDistillError):
    """A data file cannot be read, or holds rows refused under --strict."""


class ModelLoadError(EdgeDistillError):
    """A teacher/student folder or hub id cannot be loaded safely."""


class ExportError(EdgeDistillError):
    """An artifact could not be produced (unsupported combination, a runtime refused the file...)."""


class UnsupportedModelError(ExportError):
    """The student's architecture or task is not one the chosen format can export."""


class MissingDependencyError(EdgeDistillError):
    """An optional dependency is not installed; the message carries the pip command."""

    def __init__(self, module: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed. "
            f"Install it with: pip install 'edgedistill[{extra}]'"
        )


class ArtifactError(EdgeDistillError):
    """An artifact file (manifest, ONNX, GGUF, OpenVINO IR) is malformed or names a path outside its folder."""


class TrainingError(EdgeDistillError):
    """Training went wrong in a way the recipe can fix (a non-finite loss or weight, with its step)."""


class DiskFullError(EdgeDistillError):
    """A write ran out of space (or hit a file-size limit); nothing already written was replaced."""

    def __init__(self, path, free_bytes: int | None, cause: str = "no space left on the device"):
        self.path = str(path)
        self.free_bytes = free_bytes
        free = "unknown" if free_bytes is None else f"{free_bytes / 2**20:.1f} MiB"
        super().__init__(
            f"{self.path}: {cause} ({free} free there); the previous output, if any, is untouched and "
            f"no temporary file was left. Free some space (or choose another --out) and run the same "
            f"command again"
        )
