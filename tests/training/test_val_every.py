"""Validation every N epochs (``val_every``): records, the gate, the red flags and ``best.pt`` stay honest."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from training_support import tiny_job

from xraydet.training import job_from_dict, resume_training, run_training
from xraydet.training.history import is_validated, normalize_row, read_results_csv
from xraydet.training.hooks import DecisionGate, HookList, NanLossFlag, OverfitFlag, PlateauFlag, TrainContext
from xraydet.training.validation_cadence import time_budget_ends

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


def test_metric_flags_count_validations_and_name_their_epochs() -> None:
    def validated(epoch: int, map50: float, val_loss: float) -> dict[str, float]:
        return {
            "epoch": epoch,
            "train_loss": 10.0 - epoch,
            "map50": map50,
            "map50_95": map50 / 2,
            "val_loss": val_loss,
        }

    history: list[dict[str, float]] = []
    for epoch in range(1, 13):  # validated every third epoch: 3 6 9 12; val loss rising, mAP stuck after 3
        history.append(
            validated(epoch, 0.5, 2.0 + epoch / 3)
            if epoch % 3 == 0
            else {"epoch": epoch, "train_loss": 10.0 - epoch}
        )
    plateau, overfit = PlateauFlag(patience=2), OverfitFlag(window=3, min_val_rise=0.02)
    hooks, ctx, verdicts = HookList([plateau, overfit]), TrainContext(run_dir=Path("."), epochs=12), []
    for record in history:
        ctx.epoch = int(record["epoch"])
        ctx.history.append(record)
        verdicts += [(ctx.epoch, v) for v in hooks.call("after_fit_epoch", ctx, record)]
    assert [(epoch, v.hook) for epoch, v in verdicts] == [(9, "plateau"), (9, "overfitting")]
    by_hook = {v.hook: v for _, v in verdicts}
    assert "over epochs 3-9 " in by_hook["overfitting"].reason
    assert "2 validations since epoch 3" in by_hook["plateau"].reason
    assert by_hook["plateau"].values["epochs_since_best"] == 6


@pytest.mark.parametrize(
    ("hours", "elapsed_s", "start_epoch", "epoch", "ends"),
    [
        (None, 50.0, 0, 4, False),  # no time budget
        (100 / 3600, 50.0, 0, 4, False),  # 5 epochs of 10 s done, 10 planned
        (100 / 3600, 98.0, 0, 9, True),  # 2 s left, under a quarter epoch: the next epoch would be cut
        (14.4 / 3600, 3.0, 12, 12, True),  # resumed: 1 epoch this session -> plan ceil(14.4 / 3) = 5 <= 12
    ],
)
def test_time_budget_ends_follows_ultralytics_rule(
    hours: float | None, elapsed_s: float, start_epoch: int, epoch: int, ends: bool
) -> None:
    trainer = SimpleNamespace(  # the four fields Ultralytics' trainer exposes and the rule reads
        args=SimpleNamespace(time=hours),
        train_time_start=time.time() - elapsed_s,
        start_epoch=start_epoch,
        epoch=epoch,
    )
    assert time_budget_ends(trainer) is ends


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


@pytest.mark.slow
def test_no_best_weights_before_the_first_validation(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    hooks = [{"name": "test_best_watcher"}]
    raw = {**tiny_job(data=tiny_data, hooks=hooks), "epochs": 3, "val_every": 3, "gate": {"enabled": False}}
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(raw), run_dir)
    assert result.status == "completed", result.stop_reason
    digests = json.loads((run_dir / "best_digests.json").read_text())
    assert sorted(digests) == ["3"]  # epochs 1 and 2 were never measured: no best.pt from them


@pytest.mark.slow
def test_a_run_ended_by_its_timeout_ends_on_a_validated_epoch(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    raw = {
        **tiny_job(data=tiny_data),
        "epochs": 40,
        "val_every": 10,
        "timeout_s": 6,
        "gate": {"enabled": False},
    }
    result = run_training(job_from_dict(raw), tmp_path / "run")
    assert result.status == "timed_out" and result.epochs_completed < 10
    assert is_validated(result.history[-1]) and result.final_metrics.get("map50") is not None


@pytest.mark.slow
def test_a_time_budget_run_ends_on_a_validated_epoch(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    raw = {**tiny_job(data=tiny_data), "epochs": 300, "val_every": 50, "gate": {"enabled": False}}
    raw["overrides"] = {**raw.get("overrides", {}), "time": 0.003}  # 10.8 s: Ultralytics re-plans the epochs
    result = run_training(job_from_dict(raw), tmp_path / "run")
    assert result.status == "completed" and 1 < result.epochs_completed < 50
    assert is_validated(result.history[-1]) and result.final_metrics.get("map50") is not None


@pytest.mark.slow
def test_switching_back_to_every_epoch_validation_on_extension(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    raw = {**tiny_job(data=tiny_data), "epochs": 4, "val_every": 3, "gate": {"enabled": False}}
    assert run_training(job_from_dict(raw), run_dir).status == "completed"
    job_file = run_dir / "job.yaml"
    job_file.write_text(job_file.read_text().replace("val_every: 3", "val_every: 1"))
    result = resume_training(run_dir, epochs=6)
    assert result.status == "completed", result.stop_reason
    # really measured (a validation never yields a zero val loss), not the zeros Ultralytics starts from
    assert [(r["epoch"], r["val_loss"] > 0) for r in result.history if is_validated(r)] == [
        (3, True),
        (4, True),
        (5, True),
        (6, True),
    ]
