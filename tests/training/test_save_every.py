"""Checkpoints every N epochs (``save_every``): which epochs write ``last.pt``; a retry from an older one;
Ultralytics' NaN recovery, which reloads ``last.pt``; a stop on an epoch that was not written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch
from training_support import tiny_job
from ultralytics.utils.loss import v8DetectionLoss

from xraydet.errors import ConfigError
from xraydet.training import job_from_dict, run_training
from xraydet.training.checkpoint_files import checkpoint_info, find_resume_checkpoint
from xraydet.training.history import read_results_csv
from xraydet.training.hooks import HookBase, TrainContext, register_hook
from xraydet.training.validation_cadence import save_due


def trainer_after(
    done: int, epochs: int = 10, stop: bool = False, possible_stop: bool = False
) -> SimpleNamespace:
    """An Ultralytics trainer as seen at ``on_train_epoch_end`` after ``done`` epochs."""
    return SimpleNamespace(
        epoch=done - 1, epochs=epochs, stop=stop, stopper=SimpleNamespace(possible_stop=possible_stop)
    )


@pytest.mark.parametrize(
    ("done", "every", "validating", "extra", "due"),
    [
        (1, 1, False, {}, True),  # every epoch: Ultralytics' own behaviour
        (3, 3, False, {}, True),
        (4, 3, False, {}, False),
        (4, 3, True, {}, True),  # only a validated epoch can become best.pt: it must be written
        (10, 3, False, {}, True),  # the last planned epoch
        (4, 3, False, {"stop": True}, True),  # a stop request: Ultralytics validates, the run ends
        (4, 3, False, {"possible_stop": True}, True),  # early stopping may end the run here
        (9, 3, False, {}, True),
        (8, 3, False, {}, False),
    ],
)
def test_save_due(done: int, every: int, validating: bool, extra: dict[str, bool], due: bool) -> None:
    assert save_due(trainer_after(done, **extra), every, validating) is due


def test_save_every_is_a_typed_job_key(tiny_data: Path) -> None:
    with pytest.raises(ConfigError, match="save_every"):
        job_from_dict({**tiny_job(tiny_data), "save_every": 0})
    with pytest.raises(ConfigError, match="save_every"):
        job_from_dict({**tiny_job(tiny_data), "overrides": {"save": False}})
    assert job_from_dict(tiny_job(tiny_data)).save_every == 1


@pytest.mark.slow
def test_last_pt_is_written_every_n_epochs_and_where_it_must(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    raw = {
        **tiny_job(tiny_data, hooks=[{"name": "test_save_recorder"}, {"name": "test_best_watcher"}]),
        "epochs": 5,
        "val_every": 5,
        "save_every": 3,
        "checkpoint_every": 2,
        "gate": {"decision_epoch": 4, "continue_above": 0.0, "stop_below": 0.0},
    }
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(raw), run_dir)
    assert result.status == "completed", result.stop_reason

    # 2, 4: the epochNNN.pt copies need a fresh last.pt; 3: every third; 4: the gate's validation; 5: the last
    assert json.loads((run_dir / "saved_epochs.json").read_text()) == [2, 3, 4, 5]
    assert sorted(p.name for p in (run_dir / "weights").glob("epoch*.pt")) == ["epoch002.pt", "epoch004.pt"]
    assert torch.load(run_dir / "weights" / "epoch002.pt", weights_only=False)["epoch"] == 1  # 0-based
    # best.pt only ever came from a validated epoch (4 or 5), each of which was written
    digests = json.loads((run_dir / "best_digests.json").read_text())
    assert sorted(digests) == ["4", "5"]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_an_oom_retry_from_an_older_checkpoint_forgets_the_epochs_after_it(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """last.pt is from epoch 2 when epoch 4 runs out of memory: epoch 3 is trained and judged again."""
    hooks = [
        {"name": "test_stamp"},
        {"name": "test_inject_oom", "params": {"epoch": 4, "in_batch": True}},
    ]
    raw = {
        **tiny_job(tiny_data, hooks=hooks),
        "epochs": 5,
        "batch": 8,
        "val_every": 10,
        "save_every": 2,
        "checkpoint_every": 0,
        "gate": {"enabled": False},
    }
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(raw), run_dir)

    assert result.status == "completed", result.stop_reason
    assert [(r["from_epoch"], r["batch_to"]) for r in result.retries] == [(2, 4)]
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2, 3, 4, 5]
    stamps = [(v.epoch, v.values["attempt"]) for v in result.verdicts if v.hook == "test_stamp"]
    # one verdict per epoch; epoch 3 only as the retry judged it (the first attempt's is dropped)
    assert stamps == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert find_resume_checkpoint(run_dir).epochs_done == 5  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [1, 2])  # 1: before any hook state reached state.json
def test_an_oom_inside_a_hook_leaves_no_hook_without_that_epoch(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, epoch: int
) -> None:
    """The epoch runs out of memory inside a hook, after the gate judged it and before the stamp hook did;
    the retry starts after that epoch's checkpoint, so the epoch is replayed into the hooks: each judges it
    once, and the verdict a hook gave after one of its batches stays on record (replay gives no batches)."""
    hooks = [
        {"name": "test_batch_warning", "params": {"epoch": epoch}},
        {"name": "test_inject_oom", "params": {"epoch": epoch}},
        {"name": "test_stamp"},
    ]
    gate = {"decision_epoch": epoch, "continue_above": 0.0, "stop_below": 0.0}
    raw = {**tiny_job(tiny_data, hooks=hooks, gate=gate), "epochs": 3, "batch": 8}
    result = run_training(job_from_dict(raw), tmp_path / "run")

    assert result.status == "completed", result.stop_reason
    assert [r["from_epoch"] for r in result.retries] == [epoch]
    stamps = [(v.epoch, v.values["attempt"]) for v in result.verdicts if v.hook == "test_stamp"]
    assert stamps == [(e, 1 if e < epoch else 2) for e in (1, 2, 3)]
    assert [v.epoch for v in result.verdicts if v.hook == "decision_gate"] == [epoch]
    assert [v.epoch for v in result.verdicts if v.hook == "test_batch_warning"] == [epoch]


@register_hook
class NanInEpoch(HookBase):
    """Turns the training loss NaN in every batch of the first pass through ``epoch`` (a transient blow-up:
    Ultralytics' own NaN recovery redoes the epoch, and the redo is clean)."""

    name = "test_nan_in_epoch"
    active: ClassVar[dict[str, bool]] = {"on": False}

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch
        self.passes = 0

    def before_epoch(self, ctx: TrainContext) -> None:
        if ctx.epoch == self.epoch:
            self.passes += 1
        NanInEpoch.active["on"] = ctx.epoch == self.epoch and self.passes == 1 and ctx.attempt == 1


@pytest.fixture
def nan_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    real = v8DetectionLoss.__call__

    def loss(self: Any, preds: Any, batch: dict[str, torch.Tensor]) -> Any:
        value, items = real(self, preds, batch)
        if torch.is_grad_enabled() and NanInEpoch.active["on"]:
            value = value * math.nan
        return value, items

    monkeypatch.setattr(v8DetectionLoss, "__call__", loss)
    monkeypatch.setitem(NanInEpoch.active, "on", False)


@pytest.mark.slow
@pytest.mark.parametrize("save_every", [1, 3])
def test_a_nan_recovery_never_goes_on_from_an_older_last_pt(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, nan_when_asked: None, save_every: int
) -> None:
    """Epoch 5 turns NaN (the NaN flag only warns). Ultralytics recovers by reloading last.pt and training
    epoch 5 again. With ``save_every: 3`` last.pt holds epoch 3: going on from it as epoch 5 would drop epoch
    4's training while results.csv and the hooks keep it. The run goes back to that checkpoint instead and
    trains (and judges) epoch 4 again. With ``save_every: 1`` last.pt holds epoch 4: Ultralytics recovers."""
    hooks = [{"name": "test_stamp"}, {"name": "test_nan_in_epoch", "params": {"epoch": 5}}]
    raw = {
        **tiny_job(tiny_data, hooks=hooks, gate={"enabled": False}),
        "epochs": 6,
        "val_every": 10,
        "save_every": save_every,
        "checkpoint_every": 0,
        "red_flags": {"nan": {"action": "warn"}},
    }
    result = run_training(job_from_dict(raw), tmp_path / "run")

    assert result.status == "completed", result.stop_reason
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5, 6]
    stamps = [(v.epoch, v.values["attempt"]) for v in result.verdicts if v.hook == "test_stamp"]
    if save_every == 1:
        assert result.retries == []
        assert stamps == [(e, 1) for e in range(1, 7)]
    else:
        assert [(r["cause"], r["from_epoch"], r["batch_from"], r["batch_to"]) for r in result.retries] == [
            ("nan", 3, 16, 16)
        ]
        assert "epoch 5" in result.retries[0]["error"]
        assert stamps == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]


@pytest.mark.slow
def test_a_stop_on_an_epoch_that_was_not_written_writes_it(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """A hook stops the run after epoch 3, which was neither validated nor due to be written (the stop came
    after Ultralytics' save step): the run's resumable checkpoint must still be epoch 3's, not epoch 2's."""
    hooks = [{"name": "test_stop_at", "params": {"epoch": 3}}]
    raw = {
        **tiny_job(tiny_data, hooks=hooks, gate={"enabled": False}),
        "epochs": 5,
        "val_every": 10,
        "save_every": 2,
        "checkpoint_every": 0,
    }
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(raw), run_dir)

    assert (result.status, result.epochs_completed) == ("stopped", 3), result.stop_reason
    assert checkpoint_info(run_dir / "weights" / "resume.pt").epochs_done == 3  # type: ignore[union-attr]
    assert torch.load(run_dir / "weights" / "last.pt", weights_only=False)["train_results"]["epoch"][-1] == 3


@pytest.mark.slow
def test_an_oom_retry_halves_the_batch_ultralytics_already_halved(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch 1's first batch runs out of memory inside Ultralytics, which halves the batch (16 -> 8) and
    goes on; epoch 2 runs out of memory again, past Ultralytics' first epoch: xraydet's retry halves the batch
    in use (8 -> 4), not the 16 asked for, and the run records the batch it trains with."""
    from ultralytics.utils.loss import v8DetectionLoss

    real = v8DetectionLoss.__call__
    raised = {"n": 0}

    def out_of_memory_once(self: Any, preds: Any, batch: Any) -> Any:
        if torch.is_grad_enabled() and raised["n"] == 0:
            raised["n"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(self, preds, batch)

    monkeypatch.setattr(v8DetectionLoss, "__call__", out_of_memory_once)
    hooks = [{"name": "test_inject_oom", "params": {"epoch": 2}}]
    raw = {**tiny_job(tiny_data, hooks=hooks, gate={"enabled": False}), "epochs": 3, "batch": 16}
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(raw), run_dir)

    assert raised["n"] == 1 and result.status == "completed", result.stop_reason
    assert [(r["batch_from"], r["batch_to"], r["from_epoch"]) for r in result.retries] == [(8, 4, 2)]
    assert result.train_args["batch"] == 4
    assert torch.load(run_dir / "weights" / "resume.pt", weights_only=False)["train_args"]["batch"] == 4
