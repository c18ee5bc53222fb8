"""``xraydet data ...``: check, stats, split, merge (data_inspect) and convert, synth, doctor (data_make)."""

from __future__ import annotations

import typer

data_app = typer.Typer(
    help="Check, convert, merge, split and synthesise X-ray data sets.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    from xraydet.cli import data_inspect, data_make

    data_inspect.register(data_app)
    data_make.register(data_app)
    app.add_typer(data_app, name="data")
