"""Verdicts given after a batch (a NaN loss, the timeout's deadline) are on record like an epoch's: in the
result, in ``state.json``, in what a plan's transitions read, and they keep a stopped run stopped."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from training_support import tiny_job
from ultralytics.utils.loss import v8DetectionLoss

from xraydet.plan.train_step import outcome_of
from xraydet.training import job_from_dict, load_job, resume_training, run_training
from xraydet.training.state import RunState

pytestmark = pytest.mark.slow


@pytest.fixture
def nan_loss_from_training_batch(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """The training loss turns NaN from the 4th training batch on (epoch 2's first: 48 scans, batch 16), as a
    diverging run's does; validation losses stay finite. Set ``["diverging"]`` to False to stop it."""
    real = v8DetectionLoss.__call__
    batches = {"n": 0}
    switch = {"diverging": True}

    def diverging(self: Any, preds: Any, batch: dict[str, torch.Tensor]) -> Any:
        loss, items = real(self, preds, batch)
        if torch.is_grad_enabled():
            batches["n"] += 1
            if batches["n"] >= 4 and switch["diverging"]:
                loss = loss * math.nan
        return loss, items

    monkeypatch.setattr(v8DetectionLoss, "__call__", diverging)
    return switch


def test_a_nan_loss_in_a_batch_is_on_record_and_keeps_the_run_stopped(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, nan_loss_from_training_batch: dict[str, bool]
) -> None:
    raw = {**tiny_job(tiny_data, gate={"enabled": False}), "epochs": 3}
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(raw), run_dir)

    assert result.status == "stopped" and (result.stop_reason or "").startswith("nan_loss at epoch 2")
    nan = result.verdict("nan_loss")
    assert nan is not None and (nan.epoch, nan.decision) == (2, "stop") and nan.values["batch"] == 0
    assert [v.hook for v in RunState.load(run_dir).verdicts if v.decision == "stop"] == ["nan_loss"]
    # what the seed plan's "Loss = NaN: training failed" transition reads
    assert outcome_of(result, load_job(run_dir / "job.yaml"))["verdicts"]["nan_loss"] == "stop"

    again = resume_training(run_dir)  # a plain resume does not train into the NaN again
    assert again.status == "stopped" and again.epochs_completed == 1, again.stop_reason
    assert (again.stop_reason or "").startswith("nan_loss at epoch 2")

    # An extension trains epoch 2 again (the checkpoint is epoch 1's): the NaN verdict of the first try does
    # not outlive it, and the NaN flag judges the retrained epoch afresh. Still diverging: stopped again.
    extended = resume_training(run_dir, epochs=3)
    assert extended.status == "stopped" and extended.epochs_completed == 1, extended.stop_reason
    assert [(v.epoch, v.decision) for v in extended.verdicts if v.hook == "nan_loss"] == [(2, "stop")]
    # The blow-up was transient: another extension goes through, and nothing says NaN any more.
    nan_loss_from_training_batch["diverging"] = False
    clean = resume_training(run_dir, epochs=3)
    assert clean.status == "completed" and clean.epochs_completed == 3, clean.stop_reason
    assert clean.verdict("nan_loss") is None
    assert outcome_of(clean, load_job(run_dir / "job.yaml"))["verdicts"].get("nan_loss") is None


def test_the_timeouts_deadline_verdict_is_on_record(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    raw = {**tiny_job(tiny_data, gate={"enabled": False}), "epochs": 3, "timeout_s": 0.5}
    result = run_training(job_from_dict(raw), tmp_path / "run")
    assert result.status == "timed_out"
    assert [(v.hook, v.epoch, v.status) for v in result.verdicts if v.decision == "stop"] == [
        ("timeout", 1, "timed_out")
    ]


def test_a_batch_verdict_is_recorded_with_its_epoch(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    hooks = [{"name": "test_batch_warning", "params": {"epoch": 1}}, {"name": "test_stamp"}]
    raw = {**tiny_job(tiny_data, hooks=hooks, gate={"enabled": False}), "epochs": 2}
    result = run_training(job_from_dict(raw), tmp_path / "run")
    assert result.status == "completed", result.stop_reason
    order = [(v.hook, v.epoch) for v in result.verdicts if v.hook.startswith("test_")]
    # on record at the end of epoch 1, with that epoch's verdicts (state.json has it from then on)
    assert order == [("test_batch_warning", 1), ("test_stamp", 1), ("test_stamp", 2)]
