"""Where Ultralytics itself ends the training loop: its early stopping (``patience``) or its ``time`` budget.

A CUDA out-of-memory error in an xraydet hook of that epoch must not train past it (as at the last epoch or
after a hook's stop), and the decision gate must say when the run ended before it judged; with ``time`` and
no ``gate.decision_epoch`` the gate follows the epochs Ultralytics re-plans. Tiny real CPU trainings; the
errors are real ``torch.cuda.OutOfMemoryError`` raised by a registered hook on the first attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from training_support import tiny_job  # also registers the test hooks
from ultralytics.utils.callbacks import base as ultralytics_callbacks

from xraydet.training import job_from_dict, load_run_result, run_training
from xraydet.training.checkpoint_files import checkpoint_info
from xraydet.training.hooks import DecisionGate, TrainContext

pytestmark = pytest.mark.slow

TIME_H = 1e-5  # Ultralytics' `time` budget (hours): spent in the first batch, so the loop ends at epoch 1
PASS_GATE = {"continue_above": 0.0, "stop_below": 0.0}


@pytest.fixture
def never_improves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ultralytics' own EarlyStopping, given a best fitness no epoch reaches: with ``patience: 2`` it ends the
    loop at epoch 2 (after the first epoch it expects a possible stop, so it validates and saves epoch 2)."""

    def unreachable_best(trainer: Any) -> None:
        if trainer.epoch == 0:
            trainer.stopper.best_fitness, trainer.stopper.best_epoch = 1e9, 0

    defaults = ultralytics_callbacks.default_callbacks
    monkeypatch.setitem(
        defaults, "on_train_epoch_start", [*defaults["on_train_epoch_start"], unreachable_best]
    )


@pytest.mark.parametrize("where", ["after_fit_epoch", "after_save"])
def test_an_oom_in_a_hook_where_early_stopping_ends_the_loop_trains_no_further(
    tiny_data: Path,
    mlflow_home: Path,
    tmp_path: Path,
    never_improves: None,
    trained_epochs: list[int],
    where: str,
) -> None:
    hooks = [{"name": "test_inject_oom", "params": {"epoch": 2, "in_save": where == "after_save"}}]
    body = tiny_job(tiny_data, epochs=3, batch=8, imgsz=64, patience=2, gate={"enabled": False}, hooks=hooks)
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(body), run_dir)

    assert trained_epochs == [1, 2]  # not epoch 3: the retry does not train past Ultralytics' stop
    assert result.status == "stopped", result.stop_reason
    assert "early stopping after 2 epochs (patience)" in (result.stop_reason or "")
    assert [(r["cause"], r["from_epoch"]) for r in result.retries] == [("oom", 2)]
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert checkpoint_info(run_dir / "weights" / "resume.pt").epochs_done == 2  # type: ignore[union-attr]
    assert set(result.final_eval) >= {"map50", "map50_95"}
    assert load_run_result(run_dir) == result


def test_an_oom_in_a_hook_where_the_time_budget_ends_the_loop_trains_no_further(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, trained_epochs: list[int]
) -> None:
    hooks = [{"name": "test_inject_oom", "params": {"epoch": 1}}]
    body = tiny_job(tiny_data, epochs=3, batch=8, imgsz=64, time=TIME_H, gate={"enabled": False}, hooks=hooks)
    result = run_training(job_from_dict(body), tmp_path / "run")

    assert trained_epochs == [1]
    assert result.status == "completed", result.stop_reason
    assert [(r["cause"], r["from_epoch"]) for r in result.retries] == [("oom", 1)]
    assert result.epochs_completed == 1 and [r["epoch"] for r in result.history] == [1]


def test_the_gate_says_when_the_time_budget_ends_the_run_before_its_decision_epoch(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = tiny_job(tiny_data, epochs=3, batch=8, imgsz=64, time=TIME_H, gate={"decision_epoch": 2})
    result = run_training(job_from_dict(body), tmp_path / "run")

    assert result.status == "completed" and result.epochs_completed == 1
    assert result.verdict("decision_gate") is None  # a note, not a decision (plans read "none")
    gate = next((v for v in result.verdicts if v.hook == "decision_gate"), None)
    assert gate is not None, "the gate stayed silent"
    assert (gate.epoch, gate.decision) == (1, "warn")
    assert gate.reason == "map50 never judged: the run ended at epoch 1 (1 planned), before decision epoch 2"
    assert gate.values == {"decision_epoch": 2, "last_epoch": 1, "epochs_planned": 1, "judged": False}
    assert "never judged" in caplog.text


def test_with_time_the_default_decision_epoch_is_half_of_ultralytics_plan(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """3 epochs asked for (decision epoch 2 without `time`); the budget re-plans them to 1: judged at 1."""
    body = tiny_job(tiny_data, epochs=3, batch=8, imgsz=64, time=TIME_H, gate=PASS_GATE)
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(body), run_dir)

    gates = [v for v in result.verdicts if v.hook == "decision_gate"]
    assert [(v.epoch, v.decision) for v in gates] == [(1, "continue")]
    assert gates[0].values["decision_epoch"] == 1 and gates[0].values["epochs_planned"] == 1
    # the epoch the gate judged is the run's decision epoch from now on (a resume judges that one)
    assert yaml.safe_load((run_dir / "job.yaml").read_text())["gate"]["decision_epoch"] == 1


def _ctx(epoch: int, epochs: int, replay: bool = False) -> TrainContext:
    return TrainContext(run_dir=Path("."), epochs=epochs, epoch=epoch, replay=replay)


def test_a_gate_without_a_decision_epoch_follows_the_plan() -> None:
    gate = DecisionGate(None, continue_above=0.4, stop_below=0.3)
    assert gate.after_fit_epoch(_ctx(1, 6), {"epoch": 1, "map50": 0.5}) is None  # half of 6: epoch 3
    assert not gate.needs_validation(_ctx(2, 6)) and gate.needs_validation(_ctx(2, 4))
    verdict = gate.after_fit_epoch(_ctx(2, 4), {"epoch": 2, "map50": 0.5})  # re-planned to 4: epoch 2
    assert verdict is not None and verdict.decision == "continue"
    assert (verdict.values["decision_epoch"], verdict.values["epochs_planned"]) == (2, 4)
    assert gate.unreached(4, 4) is None


def test_a_gate_that_never_judged_says_why() -> None:
    gate = DecisionGate(5)
    assert gate.after_fit_epoch(_ctx(3, 3), {"epoch": 3, "map50": 0.5}) is None
    verdict = gate.unreached(3, 3)
    assert verdict is not None and (verdict.epoch, verdict.decision) == (3, "warn")
    assert "ended at epoch 3 (3 planned), before decision epoch 5" in verdict.reason
    assert gate.verdict is None  # not kept: an extended run is still judged at epoch 5
    cut = DecisionGate(2).unreached(2, 3)  # epoch 2 reached, but not validated and judged
    assert cut is not None and "no validated epoch from the decision epoch 2" in cut.reason
