"""CUDA out of memory in Ultralytics' final validation of ``best.pt`` (after the last epoch): training is
done, so only that validation is run again, at half its batch, down to the job's ``min_batch``; nothing is
trained again and the run keeps its results either way."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from training_support import tiny_job
from ultralytics.utils.callbacks import base as ultralytics_callbacks

from xraydet.training import job_from_dict, load_run_result, run_training
from xraydet.training.checkpoint_files import checkpoint_info
from xraydet.training.history import read_results_csv

pytestmark = pytest.mark.slow


class FinalValOOM:
    """Ultralytics callbacks (added to its defaults, so every model built in the test gets them) that record
    the epochs trained and raise a real ``torch.cuda.OutOfMemoryError`` when a validation of saved weights
    starts (``validator.training`` is False: the final validation of ``best.pt``, not an epoch's), ``times``
    times (None: every time)."""

    def __init__(self, times: int | None) -> None:
        self.times = times
        self.trained: list[int] = []  # 1-based epoch of each on_train_epoch_start
        self.final_batches: list[int] = []  # the batch of each validation of saved weights
        self.raised = 0

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.trained.append(int(trainer.epoch) + 1)

    def on_val_start(self, validator: Any) -> None:
        if validator.training:
            return
        self.final_batches.append(int(validator.dataloader.batch_size))
        if self.times is None or self.raised < self.times:
            self.raised += 1
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected in the final validation)"
            )


@pytest.fixture
def final_val_oom(monkeypatch: pytest.MonkeyPatch) -> Callable[[int | None], FinalValOOM]:
    def install(times: int | None) -> FinalValOOM:
        inject = FinalValOOM(times)
        defaults = ultralytics_callbacks.default_callbacks
        # plain functions: get_default_callbacks() deep-copies the lists, and a function copies as itself
        for event in ("on_train_epoch_start", "on_val_start"):
            method = getattr(inject, event)

            def call(obj: Any, method: Any = method) -> None:
                method(obj)

            monkeypatch.setitem(defaults, event, [*defaults[event], call])
        return inject

    return install


def mlflow_status(run_id: str | None) -> str:
    from mlflow.tracking import MlflowClient

    return str(MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).get_run(str(run_id)).info.status)


def _job(data: Path, batch: int) -> Any:
    gate = {"decision_epoch": 2, "continue_above": 0.0, "stop_below": 0.0}
    return job_from_dict(tiny_job(data, epochs=2, batch=batch, gate=gate))


def test_an_oom_in_the_final_validation_validates_best_pt_again_without_training(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, final_val_oom: Callable[[int | None], FinalValOOM]
) -> None:
    inject = final_val_oom(1)
    run_dir = tmp_path / "run"
    result = run_training(_job(tiny_data, batch=8), run_dir)

    assert inject.raised == 1
    assert result.status == "completed" and result.stop_reason is None, result.stop_reason
    # nothing trained again: each epoch once, in results.csv as in the loop
    assert inject.trained == [1, 2]
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2]
    assert result.epochs_completed == result.epochs_planned == 2
    # Ultralytics validated best.pt with twice the train batch (16); the retry with half of that
    assert inject.final_batches == [16, 8]
    assert len(result.retries) == 1
    retry = result.retries[0]
    assert retry["cause"] == "oom-final-val"
    assert (retry["batch_from"], retry["batch_to"], retry["from_epoch"]) == (16, 8, 2)
    assert "OutOfMemoryError" in retry["error"] and "injected" in retry["error"]
    state = json.loads((run_dir / "state.json").read_text())
    assert [r["cause"] for r in state["retries"]] == ["oom-final-val"]
    # the final validation's metrics (best.pt's) are in the summary, beside the last epoch's
    assert set(result.final_eval) >= {"map50", "map50_95", "precision", "recall"}
    assert result.final_metrics and result.best_metrics
    assert load_run_result(run_dir) == result
    assert json.loads((run_dir / "summary.json").read_text())["final_eval"] == result.final_eval
    # the run ended as a finished run does: best.pt stripped and loadable, resume.pt of the last epoch
    assert result.best_weights == run_dir / "weights" / "best.pt"
    assert torch.load(run_dir / "weights" / "best.pt", weights_only=False)["optimizer"] is None
    assert checkpoint_info(run_dir / "weights" / "resume.pt").epochs_done == 2  # type: ignore[union-attr]
    assert mlflow_status(result.mlflow_run_id) == "FINISHED"


def test_the_final_validation_out_of_memory_at_min_batch_keeps_the_run(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, final_val_oom: Callable[[int | None], FinalValOOM]
) -> None:
    inject = final_val_oom(None)
    run_dir = tmp_path / "run"
    result = run_training(_job(tiny_data, batch=4), run_dir)

    # validated at 8 (Ultralytics), then at 4 (min_batch): both ran out of memory
    assert inject.final_batches == [8, 4] and inject.raised == 2
    assert inject.trained == [1, 2]
    assert [(r["cause"], r["batch_from"], r["batch_to"]) for r in result.retries] == [("oom-final-val", 8, 4)]
    # the training's results stand; the reason says what could not run, and why
    assert result.status == "completed"
    reason = result.stop_reason or ""
    assert "final validation" in reason and "best.pt" in reason and "min_batch 4" in reason, reason
    assert result.final_eval == {}
    assert result.epochs_completed == 2 and result.final_metrics and result.best_metrics
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2]
    best = run_dir / "weights" / "best.pt"
    assert result.best_weights == best and torch.load(best, weights_only=False)["epoch"] == -1  # stripped
    assert load_run_result(run_dir) == result
    assert mlflow_status(result.mlflow_run_id) == "FINISHED"


def test_the_train_summary_table_tells_a_final_validation_retry_from_a_training_one() -> None:
    from xraydet.cli.train import _retry_row
    from xraydet.training.trainer import FINAL_VAL_OOM

    training = {"cause": "oom", "batch_from": 16, "batch_to": 8, "from_epoch": 3}
    final = {**training, "cause": FINAL_VAL_OOM, "batch_from": 32, "batch_to": 16}
    assert _retry_row(training) == ("OOM retry", "batch 16 -> 8 from epoch 3")
    label, what = _retry_row(final)
    assert label == "final val OOM" and "best.pt" in what and "32 -> 16" in what and "epoch" not in what
