"""An epoch trained again (after a resume or an OOM retry from an older checkpoint) is in MLflow once, with
its new value, as in ``results.csv``: the values logged after the checkpoint are dropped from the SQLite store
(metric history and latest value) before training on. A store that cannot drop them marks them superseded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from training_support import tiny_job  # also registers the test hooks

from xraydet.training import job_from_dict, run_training
from xraydet.training.mlflow_logger import MlflowRunLogger


def _client() -> object:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def history(run_id: str, key: str) -> dict[int, list[float]]:
    """Every value of ``key`` MLflow holds for the run, per step (a step logged twice has two)."""
    steps: dict[int, list[float]] = {}
    for metric in _client().get_metric_history(run_id, key):  # type: ignore[attr-defined]
        steps.setdefault(metric.step, []).append(metric.value)
    return dict(sorted(steps.items()))


def _logged(name: str, epochs: int) -> MlflowRunLogger:
    logger = MlflowRunLogger("xraydet-test-mlflow-epochs", name)
    for epoch in range(1, epochs + 1):
        logger.log_epoch({"epoch": epoch, "map50": 0.1 * epoch, "train_loss": 2.0 - 0.1 * epoch})
    return logger


def test_forgetting_the_steps_after_a_checkpoint_drops_them_from_the_sqlite_store(mlflow_home: Path) -> None:
    other = _logged("other", 3)
    logger = _logged("run", 3)
    logger.log_epoch({"epoch": 3, "lr_pg0": 0.01})  # a key logged only after the checkpoint

    assert logger.forget_steps_after(1) == 5

    assert history(logger.run_id, "map50") == {1: [pytest.approx(0.1)]}
    assert history(logger.run_id, "lr_pg0") == {}
    run = _client().get_run(logger.run_id)  # type: ignore[attr-defined]
    assert run.data.metrics == {"map50": pytest.approx(0.1), "train_loss": pytest.approx(1.9)}  # latest
    logger.log_epoch({"epoch": 2, "map50": 0.25, "train_loss": 1.5})  # epoch 2 trained again
    assert history(logger.run_id, "map50") == {1: [pytest.approx(0.1)], 2: [pytest.approx(0.25)]}
    assert _client().get_run(logger.run_id).data.metrics["map50"] == pytest.approx(0.25)  # type: ignore[attr-defined]
    assert history(other.run_id, "map50") == {e: [pytest.approx(0.1 * e)] for e in (1, 2, 3)}  # untouched
    assert logger.forget_steps_after(2) == 0


def test_a_store_that_cannot_drop_values_marks_them_superseded(
    mlflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.store.tracking import sqlalchemy_store

    logger = _logged("run", 2)
    monkeypatch.setattr(sqlalchemy_store, "SqlAlchemyStore", type("NotThisStore", (), {}))

    assert logger.forget_steps_after(1) == 0

    assert history(logger.run_id, "map50") == {1: [pytest.approx(0.1)], 2: [pytest.approx(0.2)]}
    tags = _client().get_run(logger.run_id).data.tags  # type: ignore[attr-defined]
    [mark] = json.loads(tags["xraydet.superseded_metrics"])
    assert mark["after_step"] == 1 and mark["logged_before_ms"] > 0


@pytest.mark.slow
def test_an_epoch_trained_again_after_an_oom_retry_is_logged_once_with_its_new_value(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """``save_every: 3``: epoch 1 is logged but not checkpointed; out of memory at the end of epoch 2 sends
    the run back to the start, and epoch 1 is trained again."""
    oom = {"name": "test_inject_oom", "params": {"epoch": 2}}
    body = tiny_job(
        tiny_data,
        epochs=3,
        batch=8,
        imgsz=64,
        val_every=3,
        save_every=3,
        checkpoint_every=0,
        gate={"enabled": False},
        hooks=[oom],
    )
    result = run_training(job_from_dict(body), tmp_path / "run")

    assert result.status == "completed", result.stop_reason
    assert [(r["cause"], r["from_epoch"]) for r in result.retries] == [("oom", 0)]
    logged = history(str(result.mlflow_run_id), "train_loss")
    assert logged == {r["epoch"]: [pytest.approx(r["train_loss"])] for r in result.history}
    assert sorted(logged) == [1, 2, 3]
