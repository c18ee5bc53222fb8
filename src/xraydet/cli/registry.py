"""``xraydet registry register | list | promote | rollback | champion``: a thin CLI over
:mod:`xraydet.registry` (the logic lives there; this module parses options and prints)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xraydet.cli.progress import stage_progress, stdout_to_stderr
from xraydet.inference import TTA, Backend

console = Console()
err_console = Console(stderr=True)

registry_app = typer.Typer(
    help="Register models in MLflow, promote a version to champion through the gate, roll back.",
    no_args_is_help=True,
)


def _time(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M") if ms else ""


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@registry_app.command("register")
def register_cmd(
    weights: Path = typer.Argument(..., help="Weights (.pt or .onnx); an .onnx beside a .pt goes too."),
    name: str = typer.Option(..., "--name", "-n", help="Registered model name."),
    report: Path | None = typer.Option(None, "--report", help="Eval report folder (holds report.json)."),
    run_id: str | None = typer.Option(None, "--run-id", help="Log into this MLflow (training) run."),
) -> None:
    """Register WEIGHTS as a new version of model NAME (with its eval report's metrics as tags)."""
    from xraydet.registry import register_model

    version = register_model(weights, name, report=report, run_id=run_id)
    console.print(f"registered [bold]{name}[/] version [bold]{version}[/]")
    console.print(f"promote it with: xraydet registry promote {name} {version} --dataset DATA")


@registry_app.command("list")
def list_cmd(
    name: str | None = typer.Argument(None, help="Model name; omit to list every registered model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List registered models, or the versions of NAME with aliases, metrics and decisions."""
    from xraydet.registry import list_models, list_versions

    if name is None:
        models = list_models()
        if as_json:
            typer.echo(json.dumps([m.model_dump() for m in models], indent=2))
            return
        table = Table(title="Registered models", title_justify="left")
        for col in ("name", "champion", "latest", "versions", "earlier champions"):
            table.add_column(col)
        for m in models:
            table.add_row(m.name, m.champion or "-", m.latest or "-", str(m.n_versions),
                          " ".join(m.history) or "-")
        console.print(table if models else "no registered models")
        return
    versions = list_versions(name)
    if as_json:
        typer.echo(json.dumps([v.model_dump() for v in versions], indent=2))
        return
    table = Table(title=f"Versions of {name}", title_justify="left")
    columns = ("version", "aliases", "created", "mAP50", "threat det.", "false alarms", "decision", "sha256")
    for col in columns:
        table.add_column(col)
    for v in versions:
        metric = v.metrics.get
        table.add_row(v.version, ", ".join(v.aliases) or "", _time(v.created), _num(metric("map50")),
                      _num(metric("threat_detection_rate")), _num(metric("false_alarm_rate")),
                      v.decision or "", (v.sha256 or "")[:12],
                      style="bold" if "champion" in v.aliases else None)
    console.print(table)


def _decision_table(decision: object) -> Table:
    from xraydet.registry import PromotionDecision

    assert isinstance(decision, PromotionDecision)
    table = Table(title="Candidate vs champion (same images)", title_justify="left")
    champ = f"champion v{decision.champion_version}"
    columns = ("metric", "better", f"v{decision.version}", champ, "tolerance", "ok")
    for col in columns:
        table.add_column(col)
    for c in decision.comparisons:
        better = "higher" if c.higher_is_better else "lower"
        table.add_row(c.metric, better, _num(c.candidate), _num(c.champion), f"{c.tolerance:g}",
                      "[green]yes" if c.passed else "[red]no")
    return table


def _gate_table(decision: object) -> Table:
    from xraydet.registry import PromotionDecision

    assert isinstance(decision, PromotionDecision)
    table = Table(title="Readiness gate", title_justify="left")
    for col in ("criterion", "value", "limit", "ok"):
        table.add_column(col)
    for c in decision.gate_criteria:
        value = f"{c.value:.4f}" if isinstance(c.value, float) else str(c.value)
        ok = "skipped" if c.skipped else "[green]yes" if c.passed else "[red]no"
        table.add_row(c.name, value, "off" if c.limit is None else f"{c.op} {c.limit}", ok)
    return table


@registry_app.command("promote")
def promote_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    version: int = typer.Argument(..., min=1, help="Candidate version (a number, as `registry list` shows)."),
    dataset: Path | None = typer.Option(None, "--dataset", "-d", help="Evaluation data (data.yaml/folder)."),
    negatives: list[Path] = typer.Option([], "--negatives", help="Threat-free images folder (repeatable)."),
    policy: Path | None = typer.Option(None, "--policy", help="Gate policy YAML (default: the seed's)."),
    tolerance: float = typer.Option(0.005, "--tolerance", min=0.0, max=1.0,
                                    help="How much worse than the champion a metric may be."),
    force_reason: str | None = typer.Option(
        None, "--force-reason",
        help="Promote even if worse than the champion, for this recorded reason (never overrides the gate).",
    ),
    split: str | None = typer.Option(None, "--split", help="Split to evaluate \\[default: val]."),
    conf: float | None = typer.Option(
        None, "--conf", help="Operating confidence threshold for both models \\[default: 0.25]."
    ),
    max_images: int | None = typer.Option(None, "--max-images", min=1, help="Seeded sample of the split."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed \\[default: 0]."),
    backend: Backend = typer.Option("auto", "--backend", help="Inference backend (auto: by file suffix)."),
    tta: TTA | None = typer.Option(
        None, "--tta", help="Test-time augmentation of both models \\[default: off; the candidate report's]."
    ),
    review_dir: Path | None = typer.Option(None, "--review-dir", exists=True, file_okay=False,
                                            help="Human review, if needed."),
    candidate_report: Path | None = typer.Option(
        None, "--candidate-report",
        help="An existing (reviewed) eval report of VERSION: gate it and evaluate the champion like it.",
    ),
    out: Path | None = typer.Option(None, "--out", help="Folder for both reports and decision.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
) -> None:
    """Make VERSION the champion if it passes the gate and is no worse than the champion (refused: exit 1)."""
    from xraydet.registry import ComparisonPolicy, promote

    # with --json, stdout carries the JSON only: an ONNX export's Ultralytics log goes to stderr
    with stdout_to_stderr(as_json), stage_progress() as update:

        def step(label: str, done: int, total: int) -> None:
            update(f"evaluating {label}", done, total)

        decision = promote(
            name, version, dataset, policy=policy, negatives=list(negatives), force_reason=force_reason,
            comparison=ComparisonPolicy.uniform(tolerance), split=split, conf=conf, max_images=max_images,
            seed=seed, backend=backend, tta=tta, review_dir=review_dir, candidate_report=candidate_report,
            out_dir=out, progress=step,
        )
    if as_json:
        typer.echo(json.dumps(decision.model_dump(mode="json"), indent=2))
    else:
        if decision.gate_criteria:
            console.print(_gate_table(decision))
        if decision.comparisons:
            console.print(_decision_table(decision))
        colour = {"promoted": "green", "forced": "yellow", "unchanged": "blue"}.get(decision.decision, "red")
        console.print(f"[bold {colour}]{decision.decision}[/]: {name} v{version}")
        for reason in decision.reasons:
            console.print(f"  - {escape(reason)}")
        review_failed = any("review" in c.name and not c.passed for c in decision.gate_criteria)
        if candidate_report is None and review_failed:
            console.print("hint: a review belongs to one report; evaluate and review the candidate first, "
                          "then pass that report with --candidate-report DIR (see docs/registry.md)")
    if decision.decision == "refused":
        raise typer.Exit(1)


@registry_app.command("rollback")
def rollback_cmd(name: str = typer.Argument(..., help="Registered model name.")) -> None:
    """Point the champion back at the previous champion."""
    from xraydet.registry import champion, rollback

    before = champion(name)
    version = rollback(name)
    console.print(f"[bold]{name}[/]: champion v{before} -> v{version}")


@registry_app.command("champion")
def champion_cmd(
    name: str = typer.Argument(..., help="Registered model name."),
    path: bool = typer.Option(False, "--path", help="Print the local path of its weights instead."),
) -> None:
    """Print the champion version of NAME, or with --path its weights file (exit 1 when none is set)."""
    from xraydet.registry import champion, resolve_model

    version = champion(name)
    if version is None:
        err_console.print(f"{name} has no champion yet; promote a version first")
        raise typer.Exit(1)
    typer.echo(str(resolve_model(f"{name}/{version}")) if path else version)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
