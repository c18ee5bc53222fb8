"""``xraydet train JOB.yaml [--set key=value ...]``, ``xraydet train --resume RUN_DIR [--epochs N]``,
``xraydet train presets`` (or ``--list-presets``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xraydet.errors import ConfigError

console = Console()


def register(app: typer.Typer) -> None:
    app.command("train", help="Train a YOLO detector from a job file, or resume/extend a run.")(train)


def train(
    job_file: Path | None = typer.Argument(
        None, help="Job YAML (or the word 'presets' to list presets).", show_default=False
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        "-s",
        help="Override a job key: key=value (YAML value; dots for sections, hooks[0] for list items).",
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Continue (or extend) the run in this folder."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="With --resume: train to this many epochs in total."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="Folder for a new run (default runs/train/<name>-<time>)."
    ),
    list_presets_: bool = typer.Option(
        False, "--list-presets", help="List the hyper-parameter presets and exit."
    ),
) -> None:
    from xraydet.training import list_presets, load_job, resume_training, run_training

    if list_presets_ or (job_file is not None and str(job_file) == "presets" and not job_file.exists()):
        _print_presets(list_presets())
        return
    if resume is not None:
        if job_file is not None or set_:
            raise ConfigError("--resume continues a run with its own job.yaml; drop the job file and --set")
        if run_dir is not None:
            raise ConfigError(
                f"--resume continues the run in its own folder ({resume}); drop --run-dir, which only names "
                "the folder of a new run"
            )
        result = resume_training(resume, epochs=epochs)
    else:
        if job_file is None:
            raise ConfigError("give a job file (xraydet train JOB.yaml) or --resume RUN_DIR")
        if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--run-dir {run_dir}: exists and is not a folder; give a folder for a new run")
        if epochs is not None:
            set_ = [*set_, f"epochs={epochs}"]
        result = run_training(load_job(job_file, set_), run_dir=run_dir)
    _print_result(result)
    if result.status == "failed":
        raise typer.Exit(1)


def _print_presets(presets: dict[str, Path]) -> None:
    from xraydet.training import load_preset

    table = Table(title="Training presets (xraydet/training/presets/*.yaml)")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("args")
    for name in presets:
        preset = load_preset(name)
        args = ", ".join(f"{k}={v}" for k, v in preset.args.items())
        table.add_row(name, preset.description, args)
    console.print(table)


def _print_result(result: object) -> None:
    from xraydet.training import RunResult

    assert isinstance(result, RunResult)
    colour = {"completed": "green", "stopped": "yellow", "timed_out": "yellow"}.get(result.status, "red")
    table = Table(title=f"Training run {escape(str(result.run_dir))}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("status", f"[{colour}]{result.status}[/]")
    if result.stop_reason:
        table.add_row("stop reason", escape(result.stop_reason))
    table.add_row("epochs", f"{result.epochs_completed}/{result.epochs_planned}")
    best = result.best_metrics
    if best:
        table.add_row(
            f"best (epoch {result.best_epoch})",
            f"mAP50 {best.get('map50', 0):.4f}  mAP50-95 {best.get('map50_95', 0):.4f}  "
            f"P {best.get('precision', 0):.3f}  R {best.get('recall', 0):.3f}",
        )
    table.add_row("best weights", escape(str(result.best_weights or "-")))
    for verdict in result.verdicts:
        style = {"continue": "green", "warn": "yellow", "stop": "red"}[verdict.decision]
        table.add_row(f"{verdict.hook} @ {verdict.epoch}", f"[{style}]{verdict.decision}[/] {verdict.reason}")
    for retry in result.retries:
        table.add_row(*_retry_row(retry))
    table.add_row("MLflow run", str(result.mlflow_run_id or "-"))
    table.add_row("wall time", f"{result.wall_time_s:.1f} s")
    speed = result.throughput
    if "train_images_per_s" in speed:
        wait = speed.get("loader_wait_frac")
        waited = f", waiting for data {wait:.0%} of the loop" if wait is not None else ""
        table.add_row("training loop", f"{speed['train_images_per_s']:.0f} images/s (median){waited}")
    console.print(table)


def _retry_row(retry: dict[str, Any]) -> tuple[str, str]:
    """A retry of the run as a (label, what) row of the summary table."""
    from xraydet.training.trainer import FINAL_VAL_OOM

    cause = retry.get("cause")
    if cause == "nan":
        return "NaN restart", f"from epoch {retry['from_epoch']} (last.pt was older than the epoch before)"
    if cause == FINAL_VAL_OOM:
        return "final val OOM", f"best.pt validated again, batch {retry['batch_from']} -> {retry['batch_to']}"
    return "OOM retry", f"batch {retry['batch_from']} -> {retry['batch_to']} from epoch {retry['from_epoch']}"
