"""Progress bars for long commands (rich, on stderr so that ``--json`` output on stdout stays clean).

Library functions take plain callbacks; these context managers turn them into bars. :func:`stdout_to_stderr`
keeps what libraries print (Ultralytics' log and bars) off stdout while a ``--json`` command works.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, redirect_stdout

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


@contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """While the block runs, send what is printed to stdout to stderr instead: keeps ``--json`` stdout pure.

    Covers ``print``, bars that write to ``sys.stdout`` and the log handlers that were bound to stdout when
    they were made (Ultralytics' own ``StreamHandler(sys.stdout)``), which ``redirect_stdout`` alone misses.

    Example:
        >>> import io
        >>> from contextlib import redirect_stderr
        >>> err = io.StringIO()
        >>> with redirect_stderr(err), stdout_to_stderr():
        ...     print("noise")
        >>> err.getvalue()
        'noise\\n'
    """
    if not enabled:
        yield
        return
    with ExitStack() as stack:
        stdouts = {id(sys.stdout), id(sys.__stdout__)}
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and id(handler.stream) in stdouts:
                    stack.callback(handler.setStream, handler.stream)
                    handler.setStream(sys.stderr)
        stack.enter_context(redirect_stdout(sys.stderr))
        yield
