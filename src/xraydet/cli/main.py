"""Entry point of ``xraydet``: assembles the command groups and turns input errors into messages."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

# Importing xraydet sets YOLO_OFFLINE before anything can import Ultralytics.
from xraydet import __version__
from xraydet.cli import data as data_cli
from xraydet.cli import evaluate as evaluate_cli
from xraydet.cli import plan as plan_cli
from xraydet.cli import registry as registry_cli
from xraydet.cli import serve as serve_cli
from xraydet.cli import train as train_cli
from xraydet.errors import XrayDetError
from xraydet.io import temp_target

app = typer.Typer(
    name="xraydet",
    help="X-ray baggage threat detection: check data, train, evaluate, gate, register and serve YOLO models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)

# Each command module adds its own commands; order here is the order of `xraydet --help`.
for module in (data_cli, train_cli, evaluate_cli, registry_cli, serve_cli, plan_cli):
    module.register(app)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logging."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(f"xraydet {__version__}")
        raise typer.Exit()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )


def os_error_message(err: OSError) -> str:
    """``PATH: reason`` for a file-system error, naming the path a person gave, not the temp file beside it.

    Example:
        >>> os_error_message(PermissionError(13, "Permission denied", "/sys/.r.json.wkymwuej.tmp"))
        'cannot write /sys/r.json: Permission denied'
        >>> os_error_message(IsADirectoryError(21, "Is a directory", "runs"))
        'runs: Is a directory'
        >>> os_error_message(FileNotFoundError("weights not found: a.pt"))
        'weights not found: a.pt'
    """
    if err.filename is None:
        return str(err)
    path = Path(os.fsdecode(err.filename))
    reason = err.strerror or str(err)
    if isinstance(err, FileExistsError) and path.exists() and not path.is_dir():
        reason = "is a file, where a folder is needed"  # a file in the way of a folder to make
    elif isinstance(err, NotADirectoryError):
        reason = "a part of this path is a file, where a folder is needed"
    target = temp_target(path)
    if target is not None:
        return f"cannot write {target}: {reason}"
    return f"{path}: {reason}"


def main() -> None:
    """Run the CLI; input errors print one clear line and exit 2 instead of a traceback.

    File-system errors (a missing file, a folder without write permission, a file where a folder is needed)
    are input errors too: the message names the path.
    """
    try:
        app()
    except XrayDetError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        sys.exit(2)
    except OSError as err:
        err_console.print(f"[bold red]error:[/] {escape(os_error_message(err))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
