"""Regression tests of seven review findings in the training layer: where a run ends after a CUDA OOM under
Ultralytics' ``time`` budget, after a hook's stop and on the resume of a timed-out run; resumes of runs whose
weights were moved; the decision gate's "never judged" note and its epoch under ``time``; and the
``xraydet.superseded_metrics`` tag of a non-SQL MLflow store.

Tiny real CPU trainings (64 px, a 16-image synthetic set); the OOMs are real ``torch.cuda.OutOfMemoryError``
raised by registered test hooks on the first attempt.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from training_support import tiny_job  # also registers the test hooks (test_inject_oom, test_stop_at)

from xraydet.errors import XrayDetError
from xraydet.training import job_from_dict, load_run_result, resume_training, run_training
from xraydet.training.hooks import HookBase, TrainContext, register_hook
from xraydet.training.state import RunState

pytestmark = pytest.mark.slow

NO_GATE = {"enabled": False}
TIME_H = 0.002  # Ultralytics' `time` budget (7 s): it re-plans the 2 to 100 epochs of a job to a score or so


@register_hook
class SleepAt(HookBase):
    """Sleeps ``seconds`` at the end of ``epoch`` (a run's time budget spent there, whatever the CPU)."""

    name = "test_review_sleep"

    def __init__(self, epoch: int = 1, seconds: float = 1.0) -> None:
        self.epoch = epoch
        self.seconds = seconds

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if ctx.epoch == self.epoch and not ctx.replay:
            time.sleep(self.seconds)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic set of 16 train and 8 val images of 64 px (two batches an epoch)."""
    from xraydet.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("review_synth") / "synth"
    generate(SynthConfig(n_train=16, n_val=8, imgsz=64, seed=0), out)
    return out / "data.yaml"


def small_job(data: Path, **extra: Any) -> dict[str, Any]:
    """A job of a fraction of a second per epoch, red flags and checkpoint copies off."""
    body = tiny_job(data, epochs=2, batch=8, imgsz=64, checkpoint_every=0)
    body["red_flags"] = {k: {"enabled": False} for k in ("oscillation", "plateau", "overfitting")}
    body.update(extra)
    return body


def gate_verdicts(verdicts: list[Any]) -> list[dict[str, Any]]:
    items = [v if isinstance(v, dict) else v.model_dump() for v in verdicts]
    return [v for v in items if v["hook"] == "decision_gate"]


# --- 1. an OOM after a checkpoint at the job's `epochs`, under `time` ---


def test_an_oom_at_the_jobs_last_epoch_under_time_trains_on_to_ultralytics_plan(
    small_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Guards finding 1: under ``time`` Ultralytics re-plans ``epochs``; an OOM raised by a hook after the
    checkpoint of epoch 2 (the job's ``epochs``) must not end the run as ``completed`` at 2 of a longer plan:
    the retry resumes to the plan and the run ends where its budget does."""
    hooks = [{"name": "test_inject_oom", "params": {"epoch": 2}}]
    body = small_job(small_data, epochs=2, time=TIME_H, gate=NO_GATE, hooks=hooks)
    result = run_training(job_from_dict(body), tmp_path / "run")

    assert result.status == "completed", result.stop_reason
    assert [(r["cause"], r["from_epoch"]) for r in result.retries] == [("oom", 2)]
    assert result.epochs_planned > 2 and result.epochs_completed > 2  # trained on past the job's epochs
    # where the budget ends: Ultralytics stops on the clock or on a last re-plan, within an epoch of its plan
    ends = (result.epochs_completed, result.epochs_planned)
    assert abs(result.epochs_completed - result.epochs_planned) <= 1, ends
    assert [r["epoch"] for r in result.history] == list(range(1, result.epochs_completed + 1))


# --- 2. a plain resume of a timed-out run ---


def test_an_oom_in_the_first_epoch_of_a_timed_out_runs_resume_trains_that_epoch_again(
    small_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Guards finding 2: the timeout verdict on record at the epoch a resume starts from is why it was
    resumed, not a stop of the new process: an OOM in the resume's first epoch trains that epoch again (at a
    smaller batch) and the run completes, instead of ending ``timed_out`` where the first process did."""
    run_dir = tmp_path / "run"
    sleep = [{"name": "test_review_sleep", "params": {"epoch": 1, "seconds": 2.5}}]
    body = small_job(small_data, epochs=4, timeout_s=2, gate=NO_GATE, hooks=sleep)
    first = run_training(job_from_dict(body), run_dir)
    assert first.status == "timed_out", first.stop_reason
    stopped_at = first.epochs_completed
    assert stopped_at < 4

    body = yaml.safe_load((run_dir / "job.yaml").read_text())
    body["timeout_s"] = 900
    body["hooks"] = [{"name": "test_inject_oom", "params": {"epoch": stopped_at + 1, "in_batch": True}}]
    (run_dir / "job.yaml").write_text(yaml.safe_dump(body))

    again = resume_training(run_dir)

    assert (again.status, again.epochs_completed, again.epochs_planned) == ("completed", 4, 4), (
        again.stop_reason
    )
    assert [(r["cause"], r["from_epoch"]) for r in again.retries] == [("oom", stopped_at)]
    assert [r["epoch"] for r in again.history] == [1, 2, 3, 4]


# --- 3. a resume of a run whose weights were moved away ---


def test_a_resume_of_a_run_whose_weights_were_moved_is_refused_not_retrained(
    small_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Guards finding 3: a finished run's ``.pt`` files moved elsewhere (results.csv shows epochs that were
    checkpointed) must not be trained again from scratch by an extension, nor by a plain resume of the run
    killed before its summary: both are refused, and the run's record stays as it was."""
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(small_job(small_data, epochs=2, gate=NO_GATE)), run_dir)
    assert first.status == "completed", first.stop_reason
    moved = tmp_path / "moved"
    moved.mkdir()
    for path in (run_dir / "weights").glob("*.pt"):
        shutil.move(path, moved / path.name)
    csv_before = (run_dir / "results.csv").read_text()

    with pytest.raises(XrayDetError, match=r"no resumable checkpoint.*moved"):
        resume_training(run_dir, epochs=3)
    (run_dir / "summary.json").unlink()
    (run_dir / "weights" / "summary.json").unlink(missing_ok=True)
    with pytest.raises(XrayDetError, match=r"no resumable checkpoint.*moved"):
        resume_training(run_dir)

    assert (run_dir / "results.csv").read_text() == csv_before
    assert not list((run_dir / "weights").glob("*.pt"))


# --- 4. an OOM after a hook's stop, at `min_batch` ---


def test_an_oom_after_a_hooks_stop_at_min_batch_ends_the_run_stopped(
    small_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Guards finding 4: a hook stops the run at epoch 1 and another raises an OOM after it in that epoch;
    at ``min_batch`` no smaller batch is left, but nothing needs training again either: the run ends
    ``stopped`` at 1 of 3 with the stop's reason, not ``failed``."""
    hooks = [
        {"name": "test_stop_at", "params": {"epoch": 1}},
        {"name": "test_inject_oom", "params": {"epoch": 1}},
    ]
    body = small_job(small_data, epochs=3, batch=8, min_batch=8, gate=NO_GATE, hooks=hooks)
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(body), run_dir)

    assert (result.status, result.epochs_completed, result.epochs_planned) == ("stopped", 1, 3), (
        result.stop_reason
    )
    assert "scripted stop" in (result.stop_reason or "")
    assert [r["epoch"] for r in result.history] == [1]
    assert load_run_result(run_dir) == result


# --- 5. the decision gate's "never judged" note ---


def test_a_gate_that_never_judged_leaves_a_note_but_no_decision(
    small_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Guards finding 5: a completed run whose decision epoch (3) is past its last (2) records the gate's
    ``warn`` note with ``values.judged`` false in summary.json, but the note is no verdict:
    ``RunResult.verdict`` skips it and the plan runner's outcome has ``decision: none`` (not ``warn``) and
    no gate entry."""
    from xraydet.plan.train_step import outcome_of

    gate = {"decision_epoch": 3, "continue_above": 0.0, "stop_below": 0.0}
    job = job_from_dict(small_job(small_data, epochs=2, gate=gate))
    run_dir = tmp_path / "run"
    result = run_training(job, run_dir)
    assert result.status == "completed", result.stop_reason

    notes = gate_verdicts(json.loads((run_dir / "summary.json").read_text())["verdicts"])
    assert [(v["decision"], v["values"].get("judged")) for v in notes] == [("warn", False)]
    assert result.verdict("decision_gate") is None
    outcome = outcome_of(result, job)
    assert (outcome["decision"], outcome["decision_epoch"]) == ("none", None)
    assert "decision_gate" not in outcome["verdicts"]


def test_a_run_stopped_before_its_decision_epoch_gets_no_never_judged_note(
    small_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Guards finding 5's second half: the note is for a run that completed without its gate judging; a run
    a hook stopped before the decision epoch gets none (its stop says why the gate never judged)."""
    hooks = [{"name": "test_stop_at", "params": {"epoch": 1}}]
    gate = {"decision_epoch": 2, "continue_above": 0.0, "stop_below": 0.0}
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(small_job(small_data, epochs=2, gate=gate, hooks=hooks)), run_dir)

    assert (result.status, result.epochs_completed) == ("stopped", 1), result.stop_reason
    assert gate_verdicts(result.verdicts) == []
    assert gate_verdicts(json.loads((run_dir / "summary.json").read_text())["verdicts"]) == []


# --- 6. the decision epoch written to job.yaml under `time` ---


def test_under_time_job_yaml_gets_the_epoch_the_gate_judged(
    small_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Guards finding 6: under ``time`` with no ``gate.decision_epoch`` the gate follows Ultralytics' plan;
    once it has judged, job.yaml's ``gate.decision_epoch`` is the epoch of its verdict (what a retry, resume
    or rewind judges again), not the target of a plan that moved on, nor half the job's ``epochs``."""
    run_dir = tmp_path / "run"
    body = small_job(small_data, epochs=100, time=TIME_H, val_every=3, gate={"enabled": True})
    result = run_training(job_from_dict(body), run_dir)

    judged = result.verdict("decision_gate")
    assert judged is not None and judged.values.get("judged") is not False, result.verdicts
    assert judged.epoch < 50  # judged on Ultralytics' plan, well short of the job's 100 epochs
    written = yaml.safe_load((run_dir / "job.yaml").read_text())["gate"]["decision_epoch"]
    assert written == judged.epoch, (written, judged.epoch, judged.values)


# --- 7. the superseded-metrics tag of a non-SQL MLflow store ---


@pytest.fixture
def file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file-based MLflow store (not SQL: metric values can only be marked superseded, not dropped)."""
    monkeypatch.setenv("XRAYDET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return tmp_path / "mlruns"


def superseded_tag(logger: Any) -> str | None:
    return logger.client.get_run(logger.run_id).data.tags.get("xraydet.superseded_metrics")


def test_the_superseded_metrics_tag_stays_whole_json_after_many_marks(file_store: Path) -> None:
    """Guards finding 7: each rewind on a non-SQL store adds a mark; after a hundred the tag must still be
    JSON (it was cut at 5,000 characters, mid-mark, after about 90) holding the latest marks."""
    from xraydet.training.mlflow_logger import MlflowRunLogger

    logger = MlflowRunLogger("review", "marks")
    for epoch in (1, 2, 3):
        logger.log_epoch({"epoch": epoch, "map50": epoch / 10})
    for step in range(100):
        assert logger.forget_steps_after(step) == 0

    tag = superseded_tag(logger)
    assert tag is not None and len(tag) <= 5000
    marks = json.loads(tag)
    assert 0 < len(marks) < 100
    assert [m["after_step"] for m in marks] == list(range(100 - len(marks), 100))  # the latest, in order


def test_no_superseded_mark_when_nothing_after_the_step_was_logged(file_store: Path) -> None:
    """Guards finding 7's second half: ``logged_after=False`` (no step after the checkpoint reached MLflow)
    adds no mark, and the trainer passes it from the epochs on record."""
    from xraydet.training.mlflow_logger import MlflowRunLogger
    from xraydet.training.trainer import forget_epochs_after

    logger = MlflowRunLogger("review", "no-marks")
    logger.log_epoch({"epoch": 1, "map50": 0.1})
    logger.forget_steps_after(1, logged_after=False)
    assert superseded_tag(logger) is None

    calls: list[tuple[int, bool]] = []

    class Recorder:
        def forget_steps_after(self, step: int, logged_after: bool = True) -> int:
            calls.append((step, logged_after))
            return 0

    state = RunState(mlflow_epochs=[1, 2])
    forget_epochs_after(Recorder(), state, 2)  # type: ignore[arg-type]
    forget_epochs_after(Recorder(), state, 1)  # type: ignore[arg-type]
    assert calls == [(2, False), (1, True)]
    assert state.mlflow_epochs == [1]
