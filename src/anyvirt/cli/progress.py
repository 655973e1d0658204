"""Progress bars for long operations, drawn on stderr only when a person is watching.

Never in ``--json`` mode and never when stderr is not a terminal, so scripts
and pipes get clean output.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from anyvirt.cli.output import echo, escape_controls, stderr_console
from anyvirt.tasks import ProgressCallback, Task

#: the bar being drawn, if any: a line said meanwhile goes above it (``say_above``)
_drawing: list[Progress] = []


def wanted(json_mode: bool) -> bool:
    return not json_mode and sys.stderr.isatty()


def say_above(text: str) -> None:
    """A line on stderr that keeps to its own line: above the bar while one is drawn (written
    straight to the terminal, it would land on the bar's line and be redrawn over)."""
    if _drawing:
        _drawing[-1].console.print(escape_controls(text), markup=False, highlight=False,
                                   soft_wrap=True)
    else:
        echo(text, err=True)


@contextmanager
def progress_bar(description: str, enabled: bool) -> Iterator[ProgressCallback | None]:
    """Yield an ``on_progress`` callback that moves a bar, or None when no bar is wanted."""
    if not enabled:
        yield None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),  # names are text, not markup
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    )
    with bar:
        _drawing.append(bar)
        # no total until the platform reports a percentage: a pulsing bar, not a stuck 0%
        row = bar.add_task(escape_controls(description), total=None)

        def update(task: Task[Any]) -> None:
            if task.progress is None:
                bar.update(row, description=escape_controls(task.message or description))
            else:
                bar.update(row, total=100.0, completed=task.progress,
                           description=escape_controls(task.message or description))

        try:
            yield update
        finally:
            _drawing.remove(bar)
