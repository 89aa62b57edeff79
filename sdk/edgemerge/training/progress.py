"""Progress of long steps (calibration steps, budget-search candidates) as a `rich.progress` bar with ETA.

Drawn on stderr only when it is a terminal, so logs, pipes and CI stay clean; log lines written to stderr
while a bar is shown are printed above it (rich redirects them). A bar opened while another is shown (the
calibration of a budget-search finalist) becomes a second line of the same display: rich allows one live
display at a time."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

_shown = None          # the rich Progress on screen, if any


class _Quiet:
    def advance(self, steps: int = 1) -> None:
        pass


class _Bar:
    def __init__(self, progress, task_id):
        self._progress, self._task = progress, task_id

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(self._task, steps)


@contextlib.contextmanager
def progress_bar(total: int | None, description: str, enabled: bool = True) -> Iterator[_Quiet | _Bar]:
    """A bar of `total` steps (None: unknown) with elapsed time and ETA; `advance()` moves it."""
    global _shown
    if not enabled or not sys.stderr.isatty():
        yield _Quiet()
        return
    if _shown is not None:
        task_id = _shown.add_task(description, total=total)
        try:
            yield _Bar(_shown, task_id)
        finally:
            _shown.remove_task(task_id)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        _shown = progress
        try:
            yield _Bar(progress, progress.add_task(description, total=total))
        finally:
            _shown = None
