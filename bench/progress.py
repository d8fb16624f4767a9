"""Progress of a bench run: one rich progress bar over every measurement, quiet when not on a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# Progress


class _Progress:
    """A rich progress bar over measuring processes (silent when ``enabled`` is False)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self._progress = None
        self._task = None
        self.total = total

    @contextmanager
    def running(self) -> Iterator[_Progress]:
        if not self.enabled:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]bench[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            transient=False,
        ) as progress:
            self._progress = progress
            self._task = progress.add_task("", total=self.total)
            yield self

    def step(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def grow(self, steps: int) -> None:
        """More work than planned (an extended comparison)."""
        self.total += steps
        if self._progress is not None:
            self._progress.update(self._task, total=self.total)
