"""CUDA out of memory where the training loop ends: in a hook of the last epoch, after its checkpoint (nothing
is left to train: the run is finished, not resumed, which Ultralytics refuses as "nothing to resume"), in the
validation of the last epoch (before its checkpoint: that epoch is trained again at half the batch), and
after a hook's stop (the run ends there, as it would have). Tiny real CPU trainings; the errors are real
``torch.cuda.OutOfMemoryError`` raised by a registered hook or an Ultralytics callback, on the first attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from training_support import tiny_job  # also registers the test hooks
from ultralytics.utils.callbacks import base as ultralytics_callbacks

from xraydet.training import job_from_dict, load_run_result, run_training
from xraydet.training.checkpoint_files import checkpoint_info
from xraydet.training.history import read_results_csv

pytestmark = pytest.mark.slow

PASS_GATE = {"decision_epoch": 2, "continue_above": 0.0, "stop_below": 0.0}


def _oom_job(data: Path, **oom: Any) -> Any:
    hooks = [{"name": "test_inject_oom", "params": {"epoch": 2, **oom}}]
    return job_from_dict(tiny_job(data, epochs=2, batch=8, imgsz=64, gate=PASS_GATE, hooks=hooks))


@pytest.mark.parametrize("where", ["after_fit_epoch", "after_save"])
def test_an_oom_in_a_hook_after_the_last_checkpoint_finishes_the_run_without_training(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, trained_epochs: list[int], where: str
) -> None:
    run_dir = tmp_path / "run"
    result = run_training(_oom_job(tiny_data, in_save=where == "after_save"), run_dir)

    assert result.status == "completed" and result.stop_reason is None, result.stop_reason
    assert trained_epochs == [1, 2]  # nothing trained again, no loop
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2]
    assert result.epochs_completed == result.epochs_planned == 2
    assert [(r["cause"], r["from_epoch"], r["batch_to"]) for r in result.retries] == [("oom", 2, 4)]
    # the hooks judged the last epoch once (replayed from results.csv when the error cut them short)
    assert [(v.epoch, v.decision) for v in result.verdicts if v.hook == "decision_gate"] == [(2, "continue")]
    # the run ends as a finished run does: best.pt validated, stripped; resume.pt of the last epoch
    assert set(result.final_eval) >= {"map50", "map50_95", "precision", "recall"}
    assert torch.load(run_dir / "weights" / "best.pt", weights_only=False)["optimizer"] is None
    assert checkpoint_info(run_dir / "weights" / "resume.pt").epochs_done == 2  # type: ignore[union-attr]
    assert load_run_result(run_dir) == result


def test_an_oom_in_the_validation_of_the_last_epoch_trains_it_again_at_half_the_batch(
    tiny_data: Path,
    mlflow_home: Path,
    tmp_path: Path,
    trained_epochs: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ultralytics validates an epoch before writing its checkpoint: last.pt holds the epoch before."""
    raised: list[int] = []

    def oom_in_last_validation(validator: Any) -> None:
        if validator.training and trained_epochs == [1, 2]:  # the first attempt's epoch 2 only
            raised.append(trained_epochs[-1])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (injected in the validation of epoch 2)")

    defaults = ultralytics_callbacks.default_callbacks
    monkeypatch.setitem(defaults, "on_val_start", [*defaults["on_val_start"], oom_in_last_validation])
    body = tiny_job(tiny_data, epochs=2, batch=8, imgsz=64, gate=PASS_GATE)
    result = run_training(job_from_dict(body), tmp_path / "run")

    assert raised == [2]
    assert result.status == "completed", result.stop_reason
    assert trained_epochs == [1, 2, 2]
    assert [(r["cause"], r["from_epoch"], r["batch_from"], r["batch_to"]) for r in result.retries] == [
        ("oom", 1, 8, 4)
    ]
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert [v.epoch for v in result.verdicts if v.hook == "decision_gate"] == [2]
    assert result.final_eval and result.train_args["batch"] == 4


def test_an_oom_after_a_hooks_stop_ends_the_run_where_the_stop_was(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, trained_epochs: list[int]
) -> None:
    """A hook asked to stop at epoch 1 of 3; a later hook then ran out of memory: the stop verdict, lost with
    the error and given again when epoch 1 is replayed, still ends the run there."""
    hooks = [
        {"name": "test_stop_at", "params": {"epoch": 1}},
        {"name": "test_inject_oom", "params": {"epoch": 1}},
    ]
    body = tiny_job(tiny_data, epochs=3, batch=8, imgsz=64, gate={"enabled": False}, hooks=hooks)
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(body), run_dir)

    assert trained_epochs == [1]
    assert result.status == "stopped", result.stop_reason
    assert (result.stop_reason or "").startswith("test_stop_at at epoch 1: scripted stop")
    assert result.epochs_completed == 1 and [r["from_epoch"] for r in result.retries] == [1]
    assert [v.epoch for v in result.verdicts if v.hook == "test_stop_at"] == [1]
    assert checkpoint_info(run_dir / "weights" / "resume.pt").epochs_done == 1  # type: ignore[union-attr]
