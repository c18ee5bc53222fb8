"""CUDA out of memory in Ultralytics' final validation of ``best.pt`` (after the last epoch): training is
done, so only that validation is run again, into the run folder, at half its batch, down to batch 1; nothing
is trained again and the run keeps its results either way (out of memory at batch 1, or any other error)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from training_support import tiny_job
from ultralytics.utils.callbacks import base as ultralytics_callbacks

from xraydet.training import job_from_dict, load_run_result, run_training, trainer
from xraydet.training.checkpoint_files import checkpoint_info
from xraydet.training.history import read_results_csv
from xraydet.training.hooks import HookList, TrainContext
from xraydet.training.state import RunState
from xraydet.training.ultralytics_bridge import UltralyticsBridge

pytestmark = pytest.mark.slow


class FinalValOOM:
    """Ultralytics callbacks (added to its defaults, so every model built in the test gets them) that record
    the epochs trained and raise a real ``torch.cuda.OutOfMemoryError`` when a validation of saved weights
    starts (``validator.training`` is False: the final validation of ``best.pt``, not an epoch's), ``times``
    times (None: every time), then ``then`` (another error) once if given."""

    def __init__(self, times: int | None, then: Exception | None = None) -> None:
        self.times = times
        self.then = then
        self.trained: list[int] = []  # 1-based epoch of each on_train_epoch_start
        self.final_batches: list[int] = []  # the batch of each validation of saved weights
        self.save_dirs: list[Path] = []  # where each validation of saved weights writes its outputs
        self.raised = 0

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.trained.append(int(trainer.epoch) + 1)

    def on_val_start(self, validator: Any) -> None:
        if validator.training:
            return
        self.final_batches.append(int(validator.dataloader.batch_size))
        self.save_dirs.append(Path(validator.save_dir))
        if self.times is None or self.raised < self.times:
            self.raised += 1
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected in the final validation)"
            )
        if self.then is not None:
            err, self.then = self.then, None
            raise err


@pytest.fixture
def final_val_oom(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FinalValOOM]:
    def install(times: int | None, then: Exception | None = None) -> FinalValOOM:
        inject = FinalValOOM(times, then)
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
    tiny_data: Path,
    mlflow_home: Path,
    tmp_path: Path,
    final_val_oom: Callable[..., FinalValOOM],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inject = final_val_oom(1)
    run_dir = tmp_path / "run"
    on_disk: list[dict[str, Any]] = []  # state.json's final_eval once the training (and retry) has returned
    status = trainer._status

    def status_after_a_kill_point(*args: Any, **kwargs: Any) -> Any:
        on_disk.append(json.loads((run_dir / "state.json").read_text())["final_eval"])
        return status(*args, **kwargs)

    monkeypatch.setattr(trainer, "_status", status_after_a_kill_point)
    result = run_training(_job(tiny_data, batch=8), run_dir)

    assert inject.raised == 1
    assert result.status == "completed" and result.stop_reason is None, result.stop_reason
    # nothing trained again: each epoch once, in results.csv as in the loop
    assert inject.trained == [1, 2]
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2]
    assert result.epochs_completed == result.epochs_planned == 2
    # Ultralytics validated best.pt with twice the train batch (16); the retry with half of that
    assert inject.final_batches == [16, 8]
    assert inject.save_dirs == [run_dir, run_dir]  # the retry's outputs go where Ultralytics' went
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
    # saved as soon as the retry measured it: a kill before the summary would not lose it
    assert on_disk == [result.final_eval]
    # the run ended as a finished run does: best.pt stripped and loadable, resume.pt of the last epoch
    assert result.best_weights == run_dir / "weights" / "best.pt"
    assert torch.load(run_dir / "weights" / "best.pt", weights_only=False)["optimizer"] is None
    assert checkpoint_info(run_dir / "weights" / "resume.pt").epochs_done == 2  # type: ignore[union-attr]
    assert mlflow_status(result.mlflow_run_id) == "FINISHED"


def test_the_final_validation_out_of_memory_at_batch_1_keeps_the_run(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, final_val_oom: Callable[..., FinalValOOM]
) -> None:
    inject = final_val_oom(None)
    run_dir = tmp_path / "run"
    result = run_training(_job(tiny_data, batch=4), run_dir)

    # validated at 8 (Ultralytics), then at 4, 2 and 1 (below the min_batch 4 of training): all out of memory
    assert inject.final_batches == [8, 4, 2, 1] and inject.raised == 4
    assert inject.trained == [1, 2]
    assert [(r["cause"], r["batch_from"], r["batch_to"]) for r in result.retries] == [
        ("oom-final-val", 8, 4),
        ("oom-final-val", 4, 2),
        ("oom-final-val", 2, 1),
    ]
    # the training's results stand; the reason says what could not run, and why
    assert result.status == "completed"
    reason = result.stop_reason or ""
    assert "final validation" in reason and "best.pt" in reason and "at batch 1" in reason, reason
    assert "OutOfMemoryError" in reason and "xraydet eval" in reason and "smaller batch" not in reason, reason
    assert result.final_eval == {}
    assert result.epochs_completed == 2 and result.final_metrics and result.best_metrics
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2]
    best = run_dir / "weights" / "best.pt"
    assert result.best_weights == best and torch.load(best, weights_only=False)["epoch"] == -1  # stripped
    assert load_run_result(run_dir) == result
    assert mlflow_status(result.mlflow_run_id) == "FINISHED"


def test_another_error_in_the_final_validation_retry_keeps_the_run(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, final_val_oom: Callable[..., FinalValOOM]
) -> None:
    inject = final_val_oom(1, then=RuntimeError("disk full (injected in the retry)"))
    run_dir = tmp_path / "run"
    result = run_training(_job(tiny_data, batch=8), run_dir)

    assert inject.final_batches == [16, 8] and inject.trained == [1, 2]
    assert [(r["cause"], r["batch_from"], r["batch_to"]) for r in result.retries] == [
        ("oom-final-val", 16, 8)
    ]
    # training is done and best.pt intact: the run keeps its status, the reason says why final_eval is empty
    assert result.status == "completed"
    reason = result.stop_reason or ""
    assert "final validation of best.pt could not run" in reason and "disk full" in reason, reason
    assert result.final_eval == {} and result.final_metrics and result.best_metrics
    assert result.best_weights == run_dir / "weights" / "best.pt"
    assert load_run_result(run_dir) == result
    assert mlflow_status(result.mlflow_run_id) == "FINISHED"


def _finished_run(
    data: Path, run_dir: Path, train_args: dict[str, Any]
) -> tuple[UltralyticsBridge, RunState]:
    """A run folder whose training ended as Ultralytics' final validation ran out of memory: an (untrained)
    best.pt, the bridge's outcome of the finished loop (validation batch 2), and the run state."""
    from ultralytics.nn.tasks import DetectionModel

    names = yaml.safe_load(data.read_text())["names"]
    names = names if isinstance(names, dict) else dict(enumerate(names))
    model = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    model.names = names
    (run_dir / "weights").mkdir(parents=True)
    torch.save({"model": model.half(), "epoch": -1, "train_args": {}}, run_dir / "weights" / "best.pt")
    bridge = UltralyticsBridge(HookList([]), TrainContext(run_dir=run_dir, epochs=2), None)
    bridge.outcome.loop_finished, bridge.outcome.epochs_done, bridge.outcome.val_batch = True, 2, 2
    state = RunState(train_args={"data": str(data), "batch": 1, **train_args})
    state.save(run_dir)
    return bridge, state


def test_the_final_validation_retry_writes_into_the_run_folder_it_is_in_now_and_saves_its_metrics(
    tiny_data: Path, tmp_path: Path, final_val_oom: Callable[..., FinalValOOM]
) -> None:
    # train_args name the folder the run was created in; it was moved (or copied) since, then resumed
    inject = final_val_oom(0)
    run_dir, created_in = tmp_path / "moved" / "run", tmp_path / "old"
    args = {"imgsz": 160, "device": "cpu", "workers": 0, "plots": False, "project": str(created_in)}
    bridge, state = _finished_run(tiny_data, run_dir, {**args, "name": "run", "exist_ok": True})

    outcome = trainer._retry_final_validation(bridge, run_dir, state, "OutOfMemoryError: injected")

    assert inject.final_batches == [1] and inject.save_dirs == [run_dir]
    assert not created_in.exists()
    assert [(r["batch_from"], r["batch_to"]) for r in state.retries] == [(2, 1)]
    assert outcome.final_eval_error is None
    assert set(state.final_eval) == {"map50", "map50_95", "precision", "recall"}
    # on disk at once, before the trainer writes its summary
    assert RunState.load(run_dir).final_eval == state.final_eval


def test_the_final_validation_retry_records_an_error_and_lets_an_interrupt_through(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge, state = _finished_run(tiny_data, tmp_path / "run", {})
    batches: list[int] = []

    def validate(weights: Path, train_args: dict[str, Any], batch: int, run_dir: Path) -> dict[str, Any]:
        batches.append(batch)
        raise OSError("No space left on device (injected)")

    monkeypatch.setattr(bridge, "validate", validate)
    outcome = trainer._retry_final_validation(bridge, tmp_path / "run", state, "OutOfMemoryError: injected")
    assert batches == [1] and state.final_eval == {}
    error = outcome.final_eval_error or ""
    assert "could not run" in error and "OSError: No space left on device" in error and "batch 1" in error

    def interrupted(weights: Path, train_args: dict[str, Any], batch: int, run_dir: Path) -> dict[str, Any]:
        raise KeyboardInterrupt

    bridge.outcome.final_eval_error = None
    monkeypatch.setattr(bridge, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer._retry_final_validation(bridge, tmp_path / "run", state, "OutOfMemoryError: injected")


def test_the_train_summary_table_tells_a_final_validation_retry_from_a_training_one() -> None:
    from xraydet.cli.train import _retry_row
    from xraydet.training.trainer import FINAL_VAL_OOM

    training = {"cause": "oom", "batch_from": 16, "batch_to": 8, "from_epoch": 3}
    final = {**training, "cause": FINAL_VAL_OOM, "batch_from": 32, "batch_to": 16}
    assert _retry_row(training) == ("OOM retry", "batch 16 -> 8 from epoch 3")
    label, what = _retry_row(final)
    assert label == "final val OOM" and "best.pt" in what and "32 -> 16" in what and "epoch" not in what
