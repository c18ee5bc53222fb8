"""Progress bars for long commands (rich, on stderr so that ``--json`` output on stdout stays clean).

Library functions take plain callbacks; these context managers turn them into bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

StageCallback = Callable[[str, int, "int | None"], None]


@contextmanager
def stage_progress() -> Iterator[StageCallback]:
    """One bar per stage; the callback takes ``(stage, done, total)`` (a new stage gets a new bar).

    Example:
        >>> with stage_progress() as update:  # doctest: +SKIP
        ...     update("labelled images", 3, 10)
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@contextmanager
def progress(label: str) -> Iterator[Callable[[int, int | None], None]]:
    """A single bar; the callback takes ``(done, total)``."""
    with stage_progress() as update:
        yield lambda done, total: update(label, done, total)


@contextmanager
def counting_progress(label: str) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """A single bar driven by ``(advance(n), set_total(total))`` callbacks."""
    done: list[int] = [0]
    expected: list[int | None] = [None]  # mutable cells shared by the two callbacks
    with stage_progress() as update:

        def advance(n: int) -> None:
            done[0] += n
            update(label, done[0], expected[0])

        def set_total(total: int) -> None:
            expected[0] = total
            update(label, done[0], total)

        yield advance, set_total
