"""The ``train`` step kind: one phase's training job (helper C's TrainJob), run, resumed or reused.

The run folder is ``<state>/steps/<phase>/run`` and is recorded *before* training starts, so an interruption
at any point (Ctrl-C, a crash, ``kill -9``) leaves a run the next attempt can pick up: a run with a terminal
``summary.json`` is reused as it is, a run with ``weights/last.pt`` is resumed with ``resume_training``, and
anything else starts over. A run that ends ``failed`` fails the step (the plan stops as failed, and
``plan resume`` tries the step again). The outcome exposes what transitions need: ``status``, ``final.*``,
``best.*``, ``decision`` (the decision gate's verdict), ``red_flags`` (how many red-flag hooks warned or
stopped).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from xraydet.config import read_yaml_mapping
from xraydet.errors import ConfigError, XrayDetError
from xraydet.plan.steps import (
    StepContext,
    StepFailed,
    StepResult,
    reference_problems,
    register_step_kind,
    resolve_against,
)
from xraydet.training.history import is_validated

if TYPE_CHECKING:
    from xraydet.plan.schema import Plan
    from xraydet.training.summary import RunResult

log = logging.getLogger(__name__)

GATE_HOOK = "decision_gate"
RED_FLAG_HOOKS = ("nan_loss", "oscillation", "plateau", "overfitting", "loader_starved")
TERMINAL = ("completed", "stopped", "timed_out", "failed")


class TrainParams(BaseModel):
    """A phase's job: TrainJob keys inline (``job``) and/or a job YAML (``job_file``; inline keys win)."""

    model_config = ConfigDict(extra="forbid")

    job: dict[str, Any] = Field(default_factory=dict)
    job_file: str | None = None


def _check(params: TrainParams, plan: Plan) -> list[str]:
    """Validate the job now (with a stand-in for ``data``, which may be made by an earlier step).

    Relative ``model``/``preset``/``job_file`` paths resolve against the plan's base folder, as they will when
    the step runs. The class ids of ``xray_augment.projection_classes`` are checked when the step builds its
    job with the real data set, not against the one-class stand-in.
    """
    from xraydet.training.job import job_from_dict

    try:
        raw, what = job_keys(params, plan.base_dir or Path.cwd())
    except ConfigError as err:
        return [str(err)]
    problems = reference_problems([raw.get("data")], plan, "job.data")
    if "data" not in raw:
        problems.append("job.data: required (a data.yaml path or @name of a data set or data step)")
    # the data set may not exist yet (an earlier step makes it): validate against a stand-in data.yaml
    with tempfile.TemporaryDirectory(prefix="xraydet-plan-check-") as tmp:
        stand_in = Path(tmp) / "data.yaml"
        stand_in.write_text("names: [object]\ntrain: images\nval: images\n", encoding="utf-8")
        try:
            job_from_dict(
                {**raw, "data": str(stand_in)}, where=what, base_dir=plan.base_dir, check_classes=False
            )
        except ConfigError as err:
            problems.append(str(err))
    return problems


def job_keys(params: TrainParams, base_dir: Path) -> tuple[dict[str, Any], str]:
    """The phase's job keys (its ``job_file``'s, relative to ``base_dir``, under the inline ones) and what
    errors call them; a ``job_file`` that is missing or not a YAML mapping is a ConfigError naming it."""
    if not params.job_file:
        return dict(params.job), "job"
    path = resolve_against(base_dir, params.job_file)
    if not path.is_file():
        raise ConfigError(f"job_file: {path} not found")
    try:
        base = read_yaml_mapping(path, "job", example="model: yolov8n.yaml")  # errors name the file (line)
    except ConfigError as err:
        raise ConfigError(f"job_file: {err}") from err
    return {**base, **params.job}, f"job (with job_file {path})"


def build_job(ctx: StepContext, params: TrainParams) -> Any:
    """The TrainJob for this phase with ``@`` references and relative paths resolved."""
    from xraydet.training.job import job_from_dict

    try:
        raw, what = job_keys(params, ctx.base_dir)
    except ConfigError as err:
        raise ConfigError(f"{ctx.step.where}.{err}") from err
    if isinstance(raw.get("data"), str):
        raw["data"] = str(ctx.resolve_data(raw["data"]))
    raw.setdefault("name", ctx.step.id)
    return job_from_dict(raw, where=f"{ctx.step.where}.{what}", base_dir=ctx.base_dir)


def train_or_resume(ctx: StepContext, job: Any, run_dir: Path, notes: list[dict[str, Any]]) -> RunResult:
    """Reuse a finished run, resume an interrupted one, or start a fresh one (see module docstring).

    What was done with an earlier attempt's run is appended to ``notes`` for the decision log.
    """
    from xraydet.training import load_run_result, resume_training, run_training

    interrupted = ctx.previous is not None and ctx.previous.status in ("running", "interrupted", "failed")
    if interrupted and (run_dir / "summary.json").is_file():
        result = load_run_result(run_dir)
        if result.status in TERMINAL and result.status != "failed":
            log.info("%s: training had finished before the interruption; reusing %s", ctx.step.id, run_dir)
            notes.append({"what": "earlier attempt", "decision": "reused", "reason": "its run had finished"})
            return result
    if interrupted and (run_dir / "weights").is_dir():
        try:
            result = resume_training(run_dir)
        except XrayDetError as err:  # e.g. killed while writing its first checkpoint: nothing to resume
            log.warning("%s: cannot resume (%s); training again from the start", ctx.step.id, err)
            notes.append({"what": "earlier attempt", "decision": "restarted", "reason": str(err)})
        else:
            notes.append(
                {
                    "what": "earlier attempt",
                    "decision": "resumed",
                    "reason": f"interrupted while {ctx.previous.status if ctx.previous else '?'}",
                    "values": result.resumes[-1] if result.resumes else {},
                }
            )
            return result
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return run_training(job, run_dir)


def outcome_of(result: RunResult, job: Any) -> dict[str, Any]:
    """The numbers and words of a run that transitions read."""
    gate = result.verdict(GATE_HOOK)
    flags = [v for v in result.verdicts if v.hook in RED_FLAG_HOOKS and v.decision != "continue"]
    latest: dict[str, str] = {}
    for v in result.verdicts:
        if v.judged:  # a gate that never judged has no decision
            latest[v.hook] = v.decision
    return {
        "status": result.status,
        "stop_reason": result.stop_reason,
        "epochs_completed": result.epochs_completed,
        "epochs_planned": result.epochs_planned,
        "final": dict(result.final_metrics),
        "best": dict(result.best_metrics),
        "best_epoch": result.best_epoch,
        "decision": gate.decision if gate else "none",
        "decision_epoch": gate.epoch if gate else None,
        "verdicts": latest,
        "red_flags": len(flags),
        "red_flag_hooks": sorted({v.hook for v in flags}),
        "model": job.model,
        "data": str(job.data),
        "training_wall_time_s": result.wall_time_s,
        "throughput": dict(result.throughput),
    }


@register_step_kind("train", TrainParams, "train a phase's job (xraydet train)", _check)
def run_train(ctx: StepContext, params: TrainParams) -> StepResult:
    job = build_job(ctx, params)
    run_dir = ctx.work_dir / "run"
    ctx.save_progress({"run_dir": run_dir})
    notes: list[dict[str, Any]] = []
    result = train_or_resume(ctx, job, run_dir, notes)
    if result.status == "failed":  # the plan stops as failed; `plan resume` tries the step again
        raise StepFailed(f"{ctx.step.where}: training failed: {result.stop_reason} (run folder {run_dir})")
    files: dict[str, Path] = {"summary": run_dir / "summary.json"}
    for name, path in (("best_weights", result.best_weights), ("last_weights", result.last_weights)):
        if path is not None and Path(path).is_file():
            files[name] = Path(path)
    decisions = notes + [
        {
            "what": f"{v.hook} at epoch {v.epoch}",
            "decision": v.decision,
            "reason": v.reason,
            "values": v.values,
        }
        for v in result.verdicts
        if v.hook == GATE_HOOK or v.decision != "continue"
    ]
    history = [
        {"epoch": h.get("epoch"), "map50": h.get("map50"), "map50_95": h.get("map50_95")}
        for h in result.history
        if is_validated(h)
    ]
    return StepResult(
        outputs={"run_dir": run_dir, "mlflow_run_id": result.mlflow_run_id},
        files=files,
        outcome=outcome_of(result, job),
        decisions=decisions,
        details={"history": history, "resumes": result.resumes, "retries": result.retries},
    )
