"""The one progress display of long commands: a rich bar on stderr (stdout stays clean), or nothing.

Runs get it from their lifecycle (``run.progress(label, total)``, :mod:`mmat.store.runs`); the bar
lives here, below every runner, so eval, optimize, prefs, synth and verify draw the same one.
"""

from __future__ import annotations

__all__ = ["ProgressBar"]


class ProgressBar:
    """``with ProgressBar("synth", total, enabled) as bar: bar.advance("live counts")``."""

    def __init__(self, label: str, total: int, enabled: bool = True):
        self.label, self.total, self.enabled = label, total, enabled
        self._progress = None
        self._task = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                      TextColumn("{task.description}"), console=Console(stderr=True))
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def advance(self, description: str = "", steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=steps, description=description)

    def describe(self, description: str) -> None:
        """New live figures without advancing (synth's LM figures change between finished seeds)."""
        self.advance(description, steps=0)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
