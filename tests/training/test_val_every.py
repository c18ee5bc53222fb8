"""Validation every N epochs (``val_every``): records, the gate, the red flags and ``best.pt`` stay honest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from training_support import tiny_job

from xraydet.training import job_from_dict, run_training
from xraydet.training.history import is_validated, normalize_row, read_results_csv
from xraydet.training.hooks import DecisionGate, HookList, NanLossFlag, PlateauFlag, TrainContext

NAN = float("nan")


def blank_epoch(epoch: int) -> dict[str, float]:
    """An epoch Ultralytics logged without validating, after the bridge blanked its metrics to NaN."""
    return {
        "epoch": epoch,
        "train/box_loss": 2.0,
        "train/cls_loss": 3.0,
        "metrics/precision(B)": NAN,
        "metrics/recall(B)": NAN,
        "metrics/mAP50(B)": NAN,
        "metrics/mAP50-95(B)": NAN,
        "val/box_loss": NAN,
        "val/cls_loss": NAN,
    }


def test_an_unvalidated_epoch_keeps_its_train_losses_and_no_val_figure() -> None:
    row = normalize_row(blank_epoch(4))
    assert row == {"epoch": 4, "train_box_loss": 2.0, "train_cls_loss": 3.0, "train_loss": 5.0}
    assert not is_validated(row)


def test_a_diverged_but_validated_epoch_keeps_its_nan_val_loss() -> None:
    row = normalize_row({**blank_epoch(4), "metrics/mAP50(B)": 0.0, "metrics/mAP50-95(B)": 0.0})
    assert is_validated(row) and math.isnan(row["val_box_loss"])
    ctx = TrainContext(run_dir=Path("."), epochs=5, epoch=4, history=[row])
    verdicts = HookList([NanLossFlag()]).call("after_fit_epoch", ctx, row)
    assert [v.decision for v in verdicts] == ["stop"]


def test_hooks_ignore_unvalidated_epochs_and_the_gate_asks_for_its_epoch() -> None:
    gate, plateau, nan = DecisionGate(decision_epoch=2), PlateauFlag(patience=2), NanLossFlag()
    hooks = HookList([gate, plateau, nan])
    ctx = TrainContext(run_dir=Path("."), epochs=6)
    rows = [
        {"epoch": 1, "train_loss": 9.0},
        {"epoch": 2, "train_loss": 8.0},  # the gate's epoch went unvalidated (e.g. a resumed run)
        {"epoch": 3, "train_loss": 7.0, "map50": 0.5, "map50_95": 0.2, "val_loss": 6.0},
        {"epoch": 4, "train_loss": 6.0},
    ]
    asked, verdicts = [], []
    for row in rows:
        ctx.epoch = row["epoch"]
        asked.append(hooks.need_validation(ctx))
        ctx.history.append(row)
        verdicts += hooks.call("after_fit_epoch", ctx, row)
    assert asked == [False, True, True, False]  # from the decision epoch until the gate has judged
    assert [(v.hook, v.epoch, v.decision) for v in verdicts] == [("decision_gate", 3, "continue")]


@pytest.mark.slow
def test_training_with_val_every_validates_only_where_needed(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    gate = {"decision_epoch": 1, "continue_above": 0.4, "stop_below": 0.0}
    hooks = [{"name": "test_best_watcher"}]
    job = job_from_dict({**tiny_job(data=tiny_data, gate=gate, hooks=hooks), "epochs": 5, "val_every": 3})
    run_dir = tmp_path / "run"
    result = run_training(job, run_dir)
    assert result.status == "completed", result.stop_reason

    # epoch 1: the gate's; 3: every third; 5: the last (Ultralytics always validates it)
    validated = [r["epoch"] for r in result.history if is_validated(r)]
    assert validated == [1, 3, 5]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5]
    assert all("train_loss" in r for r in result.history)
    raw = read_results_csv(run_dir / "results.csv")
    assert [is_validated(r) for r in raw] == [True, False, True, False, True]
    assert result.verdict("decision_gate").epoch == 1
    assert result.best_epoch in {1, 3, 5}
    assert result.final_metrics and result.final_metrics.get("map50") is not None

    # best.pt holds weights some validation measured: a skipped epoch never rewrites it
    digests = {int(k): v for k, v in json.loads((run_dir / "best_digests.json").read_text()).items()}
    assert digests[2] == digests[1] and digests[4] == digests[3]
    best = torch.load(run_dir / "weights" / "best.pt", map_location="cpu", weights_only=False)
    assert math.isfinite(best["train_metrics"]["metrics/mAP50-95(B)"])
