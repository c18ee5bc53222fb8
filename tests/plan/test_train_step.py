"""The train step on a real (tiny, CPU) training: a run that fails fails the step, and resume retries it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xraydet.plan import PlanError, parse_plan, plan_status, resume_plan, run_plan
from xraydet.training.hooks import HookBase, TrainContext, register_hook

pytestmark = pytest.mark.slow


@register_hook
class FailOnce(HookBase):
    """Raises at the end of the first epoch the first time a run folder trains (a crash mid-training)."""

    name = "test_fail_once"

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        marker = ctx.run_dir / "failed_once"
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("injected training failure")


def test_a_failed_training_fails_the_step_and_resume_retries_it(
    synth_yaml: Path, tmp_path: Path, xraydet_home: Path
) -> None:
    job = {
        "data": "@main",
        "model": "yolov8n.yaml",
        "epochs": 2,
        "batch": 16,
        "imgsz": 160,
        "device": "cpu",
        "workers": 0,
        "plots": False,
        "checkpoint_every": 0,
        "gate": {"enabled": False},
        "hooks": [{"name": "test_fail_once"}],
    }
    plan = parse_plan(
        {
            "name": "trainfail",
            "datasets": {"main": str(synth_yaml)},
            "phases": [{"id": "phase1", "job": job, "transitions": [{"goto": "end"}]}],
        }
    )
    state_dir = tmp_path / "state"
    with pytest.raises(PlanError, match=r"step 'phase1' \(train\) failed: .*training failed: RuntimeError"):
        run_plan(plan, state_dir, base_dir=tmp_path)
    state = plan_status(state_dir)
    record = state.records["phase1"]
    assert state.status == "failed" and state.end is None
    assert record.status == "failed" and "injected training failure" in (record.error or "")

    state = resume_plan(state_dir)

    record = state.records["phase1"]
    assert state.status == "finished" and state.end == "end"
    assert record.status == "done" and record.attempts == 2
    assert record.outcome["status"] == "completed" and record.outcome["epochs_completed"] == 2
    assert any(d["decision"] == "resumed" for d in record.decisions)


@pytest.mark.parametrize(
    ("text", "message"),
    [("- model\n- epochs\n", r": expected a mapping of job keys"), ("model: [\n", r":2: not valid YAML")],
)
def test_a_bad_job_file_is_an_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    """A job_file that is not a YAML mapping is an error naming the file when the plan is validated, before
    any step runs."""
    (tmp_path / "job.yaml").write_text(text)
    raw = {
        "name": "badjob",
        "datasets": {"main": str(tmp_path / "data.yaml")},
        "phases": [{"id": "phase1", "job_file": "job.yaml", "job": {"data": "@main"}}],
    }
    with pytest.raises(PlanError, match=r"phases\[0\]\.job_file: .*job\.yaml" + message):
        run_plan(parse_plan(raw, base_dir=tmp_path), tmp_path / "state", base_dir=tmp_path)
    assert not (tmp_path / "state").exists()
