"""Checkpoints every N epochs (``save_every``): which epochs write ``last.pt``; a retry from an older one."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from training_support import tiny_job

from xraydet.errors import ConfigError
from xraydet.training import job_from_dict, run_training
from xraydet.training.checkpoint_files import find_resume_checkpoint
from xraydet.training.history import read_results_csv
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
    once."""
    hooks = [{"name": "test_inject_oom", "params": {"epoch": epoch}}, {"name": "test_stamp"}]
    gate = {"decision_epoch": epoch, "continue_above": 0.0, "stop_below": 0.0}
    raw = {**tiny_job(tiny_data, hooks=hooks, gate=gate), "epochs": 3, "batch": 8}
    result = run_training(job_from_dict(raw), tmp_path / "run")

    assert result.status == "completed", result.stop_reason
    assert [r["from_epoch"] for r in result.retries] == [epoch]
    stamps = [(v.epoch, v.values["attempt"]) for v in result.verdicts if v.hook == "test_stamp"]
    assert stamps == [(e, 1 if e < epoch else 2) for e in (1, 2, 3)]
    assert [v.epoch for v in result.verdicts if v.hook == "decision_gate"] == [epoch]
