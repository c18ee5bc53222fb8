"""``xraydet plan run | status | resume | validate``: a thin CLI over :mod:`xraydet.plan`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from xraydet.plan import PlanEvent

console = Console()

# The plans shipped in xraydet/plans/ (what xraydet.plan.schema.bundled_plans finds), listed in the help.
SHIPPED_PLANS = ", ".join(
    sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "plans").glob("*.yaml"))
)

plan_app = typer.Typer(
    help="Run a declarative improvement plan (data, phases with decision gates, evaluation, gate, deploy).",
    no_args_is_help=True,
)

STYLES = {
    "start": "bold cyan",
    "skip": "dim",
    "done": "green",
    "failed": "bold red",
    "interrupted": "yellow",
    "goto": "magenta",
    "finish": "bold",
    "note": "yellow",
}
STATUS_STYLES = {
    "done": "green",
    "running": "cyan",
    "failed": "red",
    "interrupted": "yellow",
    "pending": "dim",
}


def _printer() -> Callable[[PlanEvent], None]:
    """Progress lines: seconds since start, what happened, the step and its numbers."""
    started = time.monotonic()

    def on_event(event: PlanEvent) -> None:
        transition = event.record.transition if event.record else None
        if (
            event.kind == "goto"
            and transition is not None
            and transition.rule is None
            and not transition.checked
        ):
            return  # a step without rules just goes on; the status table shows it
        elapsed = time.monotonic() - started
        style = STYLES.get(event.kind, "")
        console.print(
            f"[dim]{elapsed:7.0f}s[/] [{style}]{event.kind:>11}[/] {escape(event.message)}", highlight=False
        )

    return on_event


def default_state_dir(plan_name: str) -> Path:
    from xraydet.tracking import runs_root

    return runs_root() / "plans" / plan_name


def _latest_state_dir() -> Path:
    from xraydet.tracking import runs_root

    root = runs_root() / "plans"
    candidates = sorted(root.glob("*/state.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not candidates:
        raise typer.BadParameter(f"no plan state under {root}; pass STATE_DIR or run a plan first")
    return candidates[-1].parent


def status_table(state_dir: Path) -> Table:
    """One row per step: status, attempts, the numbers that matter, where it went, wall time, cost."""
    from xraydet.plan import plan_status
    from xraydet.plan.decisions import headline
    from xraydet.plan.runner import load_snapshot

    state = plan_status(state_dir)
    plan = load_snapshot(state_dir)
    table = Table(
        title=f"plan {state.plan_name}: {state.status}"
        + (f" at {state.current}" if state.current else "")
        + (f" (ended with {state.end})" if state.end else ""),
        title_justify="left",
    )
    for column in ("step", "status", "key numbers", "next", "time", plan.cost.currency):
        table.add_column(column, overflow="fold")
    for step in plan.steps():
        rec = state.records.get(step.id)
        name = f"{step.id} [dim]{step.kind}[/]"
        if rec is None:
            table.add_row(name, "[dim]pending[/]", "", "", "", "")
            continue
        on_path = step.id in state.trail or step.id == state.current
        style = STATUS_STYLES.get(rec.status, "")
        notes = [
            n
            for n, cond in (
                ("reused", rec.reused and on_path),
                ("off path", not on_path and rec.attempts),
                (f"{rec.attempts} tries", rec.attempts > 1),
            )
            if cond
        ]
        table.add_row(
            name,
            f"[{style}]{rec.status}[/]" + (f" ({', '.join(notes)})" if notes else ""),
            headline(rec),
            rec.transition.goto if rec.transition and on_path else "",
            f"{rec.wall_time_s:.0f}s" if rec.attempts else "",
            f"{rec.cost:.2f}" if rec.cost else "",
        )
    return table


@contextlib.contextmanager
def _interruptible(state_dir: Path) -> Iterator[None]:
    """Ctrl-C: the runner has recorded the step as interrupted; say how to go on instead of a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted.[/] Go on with: xraydet plan resume {escape(str(state_dir))}")
        raise typer.Exit(130) from None


def _finish(state_dir: Path, status: str, end: str | None) -> None:
    console.print(status_table(state_dir))
    console.print(
        escape(f"decision log: {state_dir / 'decisions.md'}\n")
        + escape(f"report:       {state_dir / 'report' / 'report.md'}")
    )
    if status != "finished":
        raise typer.Exit(1)


@plan_app.command("run")
def run(
    plan_file: str = typer.Argument(
        ..., metavar="PLAN", help=f"plan YAML, or the name of a shipped plan ({SHIPPED_PLANS})"
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="where state, logs and outputs go (default: <runs>/plans/<plan name>)"
    ),
    sets: list[str] = typer.Option(
        [],
        "--set",
        help="override a plan key, e.g. phases.phase1.job.epochs=3 (repeatable; list items by id or index)",
    ),
) -> None:
    """Execute a plan; running it again on the same state dir goes on where it stopped."""
    from xraydet.plan import load_plan, run_plan

    plan = load_plan(plan_file, sets)
    target = (state_dir or default_state_dir(plan.name)).resolve()
    console.print(f"plan [bold]{plan.name}[/]: {len(plan.steps())} steps, state in {escape(str(target))}")
    with _interruptible(target):
        state = run_plan(
            plan,
            target,
            plan_file=plan_file if Path(plan_file).exists() else None,
            overrides=sets,
            on_event=_printer(),
        )
    _finish(target, state.status, state.end)


@plan_app.command("resume")
def resume(
    state_dir: Path | None = typer.Argument(None, help="the plan's state dir (default: the latest one)"),
    redo: list[str] = typer.Option(
        [],
        "--redo",
        help="run this finished step again, and all after it "
        "(e.g. --redo gate after a human review); repeatable",
    ),
) -> None:
    """Go on with an interrupted plan without redoing finished steps whose outputs are intact."""
    from xraydet.plan import resume_plan

    target = (state_dir or _latest_state_dir()).resolve()
    console.print(f"resuming the plan in {escape(str(target))}")
    with _interruptible(target):
        state = resume_plan(target, redo=redo, on_event=_printer())
    _finish(target, state.status, state.end)


@plan_app.command("status")
def status(
    state_dir: Path | None = typer.Argument(None, help="the plan's state dir (default: the latest one)"),
) -> None:
    """Show where a plan is: every step's status, key numbers, branch taken, time and cost."""
    target = (state_dir or _latest_state_dir()).resolve()
    console.print(status_table(target))
    console.print(f"decision log: {escape(str(target / 'decisions.md'))}")


@plan_app.command("validate")
def validate(
    plan_file: str = typer.Argument(
        ..., metavar="PLAN", help=f"plan YAML or a shipped plan's name ({SHIPPED_PLANS})"
    ),
    sets: list[str] = typer.Option([], "--set", help="override a plan key before validating"),
) -> None:
    """Check a plan file (schema, step kinds, references, transitions) and list its steps."""
    from xraydet.plan import load_plan
    from xraydet.plan.transitions import condition_text

    plan = load_plan(plan_file, sets)
    table = Table(title=f"plan {plan.name}: valid", title_justify="left")
    for column in ("step", "kind", "where", "transitions"):
        table.add_column(column, overflow="fold")
    for step in plan.steps():
        rules = "; ".join(
            f"{'if ' + condition_text(t.when) if t.when else 'otherwise'} -> {t.goto}"
            for t in step.transitions
        )
        table.add_row(step.id, step.kind, step.where, rules or "next step")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")
