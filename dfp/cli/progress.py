"""Progress bars on stderr for long commands, shown only to a person at a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_callback(label: str, *, enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """Yield an `on_progress(fraction)` callback that drives a bar while the block runs."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda fraction: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
    )
    with Progress(*columns, TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(label, total=1.0)
        yield lambda fraction: bar.update(task, completed=fraction)


@contextmanager
def progress_bar(label: str, *, enabled: bool = True) -> Iterator[Callable[[float, str], None]]:
    """Yield `update(fraction, description)` driving a bar whose text changes as work goes on."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda fraction, description: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=1.0)
        yield lambda fraction, description: bar.update(
            task, completed=fraction, description=description
        )
