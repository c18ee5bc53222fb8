"""Entry point of ``xraydet``: assembles the command groups and turns input errors into messages."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler

# Importing xraydet sets YOLO_OFFLINE before anything can import Ultralytics.
from xraydet import __version__
from xraydet.cli import data as data_cli
from xraydet.cli import evaluate as evaluate_cli
from xraydet.cli import plan as plan_cli
from xraydet.cli import registry as registry_cli
from xraydet.cli import serve as serve_cli
from xraydet.cli import train as train_cli
from xraydet.errors import XrayDetError

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


def main() -> None:
    """Run the CLI; input errors print one clear line and exit 2 instead of a traceback."""
    try:
        app()
    except XrayDetError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)
    except FileNotFoundError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
