"""Real (tiny, CPU) trainings: hooks, MLflow, offline guard, kill -9 + resume, extension, OOM, timeout."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from training_support import tiny_job

from xraydet.errors import ConfigError
from xraydet.training import job_from_dict, load_run_result, resume_training, run_training
from xraydet.training.checkpoint_files import find_resume_checkpoint
from xraydet.training.history import read_results_csv

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def mlflow_client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def _is_local(host: Any) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def network_blocked() -> Iterator[list[str]]:
    """Refuse (and record) every non-loopback connection or DNS lookup made by anything in this process."""
    attempts: list[str] = []
    real_connect, real_connect_ex, real_getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError("network blocked by test")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            attempts.append(f"connect_ex {address}")
            return 111
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror("network blocked by test")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo  # type: ignore[method-assign,assignment]
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (  # type: ignore[method-assign]
            real_connect,
            real_connect_ex,
            real_getaddrinfo,
        )


def test_network_guard_is_real() -> None:
    with (
        network_blocked() as attempts,
        pytest.raises(OSError),
        socket.create_connection(("1.1.1.1", 443), timeout=1),
    ):
        pass
    assert attempts, "the guard must see a connection attempt"


@pytest.mark.parametrize("dataset", ["synth_yaml", "opixray_small"])
def test_tiny_training_with_every_hook_offline_records_mlflow(
    dataset: str, request: pytest.FixtureRequest, mlflow_home: Path, tmp_path: Path
) -> None:
    data = request.getfixturevalue(dataset)
    gate = {"decision_epoch": 2, "continue_above": 0.4, "stop_below": 0.0}  # never stops: warn or continue
    job = job_from_dict(tiny_job(data, gate=gate, plots=dataset == "synth_yaml"))  # plots cost ~10 s
    run_dir = tmp_path / "run"
    with network_blocked() as attempts:
        result = run_training(job, run_dir)
    assert attempts == [], f"training tried to reach the network: {attempts}"

    assert result.status == "completed", result.stop_reason
    assert (result.epochs_completed, result.epochs_planned) == (3, 3)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.best_weights == run_dir / "weights" / "best.pt" and result.best_weights.is_file()
    for name in ("epoch001.pt", "epoch002.pt", "epoch003.pt", "resume.pt", "summary.json"):
        assert (run_dir / "weights" / name).is_file(), name
    assert load_run_result(run_dir) == result

    gate_verdict = result.verdict("decision_gate")
    assert gate_verdict is not None and gate_verdict.epoch == 2
    map50_at_2 = result.history[1]["map50"]
    assert gate_verdict.values["map50"] == pytest.approx(map50_at_2)
    assert gate_verdict.decision == ("continue" if map50_at_2 >= 0.4 else "warn")

    client = mlflow_client()
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.lr0"] == "0.002" and params["train.optimizer"] == "AdamW"  # the improved preset
    assert params["train.epochs"] == "3" and params["train.imgsz"] == "160"
    assert params["job.gate.decision_epoch"] == "2" and params["job.red_flags.plateau.patience"] == "1"
    map50 = client.get_metric_history(run.info.run_id, "map50")
    assert sorted((m.step, m.value) for m in map50) == [(r["epoch"], r["map50"]) for r in result.history]
    assert len(client.get_metric_history(run.info.run_id, "val_box_loss")) == 3
    speed = client.get_metric_history(run.info.run_id, "train_images_per_s")
    wait = client.get_metric_history(run.info.run_id, "loader_wait_frac")
    assert sorted(m.step for m in speed) == [1, 2, 3] and all(m.value > 0 for m in speed)
    # workers=0: the main process loads every batch itself, so the loop does wait for data
    assert sorted(m.step for m in wait) == [1, 2, 3] and all(0 < m.value < 1 for m in wait)
    # the same figures in the summary's history (Ultralytics' results.csv has no column for them)
    assert [r["train_images_per_s"] for r in result.history] == [m.value for m in sorted(speed, key=step)]
    assert [r["loader_wait_frac"] for r in result.history] == [m.value for m in sorted(wait, key=step)]
    steady = [r["train_images_per_s"] for r in result.history[1:]]  # epoch 1 starts the process up
    assert result.throughput["train_images_per_s"] == pytest.approx(statistics.median(steady))
    tags = run.data.tags
    assert tags["verdict.decision_gate"] == gate_verdict.decision
    assert tags["verdict.decision_gate.epoch"] == "2"
    assert json.loads(tags["verdict.decision_gate.values"])["stop_below"] == 0.0
    assert tags["xraydet.status"] == "completed"
    for verdict in result.verdicts:
        assert tags[f"verdict.{verdict.hook}"] in {"continue", "warn", "stop"}
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "verdicts.json", "results.csv", "job.yaml", "args.yaml"} <= top
    if job.overrides["plots"]:
        assert {"results.png", "confusion_matrix.png"} <= top
    assert {a.path for a in client.list_artifacts(run.info.run_id, "weights")} == {
        "weights/best.pt",
        "weights/last.pt",
    }
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location == (mlflow_home / "runs" / "mlartifacts").resolve().as_uri()
    verdicts_file = json.loads((run_dir / "verdicts.json").read_text())
    assert [v["hook"] for v in verdicts_file] == [v.hook for v in result.verdicts]

    # final_eval: best.pt's metrics from Ultralytics' final validation, as best.pt validated on its own gives
    # them (same data, size and batch: twice the train batch, as Ultralytics' validation loader)
    from ultralytics import YOLO

    assert set(result.final_eval) == {"map50", "map50_95", "precision", "recall"}
    alone = YOLO(str(result.best_weights)).val(
        data=result.train_args["data"],
        imgsz=result.train_args["imgsz"],
        batch=2 * result.train_args["batch"],
        device="cpu",
        workers=0,
        plots=False,
        project=str(tmp_path),
        name="best_alone",
        verbose=False,
    )
    names = {
        "map50": "mAP50(B)",
        "map50_95": "mAP50-95(B)",
        "precision": "precision(B)",
        "recall": "recall(B)",
    }
    for key, name in names.items():
        assert result.final_eval[key] == pytest.approx(alone.results_dict[f"metrics/{name}"], abs=1e-6), key


def test_gate_stop_from_the_cli(tiny_data: Path, mlflow_home: Path, tmp_path: Path) -> None:
    import typer
    import yaml
    from typer.testing import CliRunner

    from xraydet.cli import train as train_cli

    app = typer.Typer()
    train_cli.register(app)
    app.callback()(lambda: None)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        yaml.safe_dump(tiny_job(tiny_data, gate={"decision_epoch": 1, "continue_above": 0.99}))
    )
    run_dir = tmp_path / "run"
    out = CliRunner().invoke(app, ["train", str(job_file), "--set", "epochs=3", "--run-dir", str(run_dir)])
    assert out.exit_code == 0, out.output
    result = load_run_result(run_dir)
    assert "training loop" in out.output and result.throughput["train_images_per_s"] > 0
    map50 = result.history[0]["map50"]
    assert map50 < 0.99
    expected = "stop" if map50 < 0.30 else "warn"
    assert result.verdict("decision_gate").decision == expected  # type: ignore[union-attr]
    if expected == "stop":  # the run ends at the gate, resumable
        assert result.status == "stopped" and result.epochs_completed == 1
        assert "decision_gate" in (result.stop_reason or "")
        assert find_resume_checkpoint(run_dir).epochs_done == 1  # type: ignore[union-attr]
        tags = mlflow_client().get_run(result.mlflow_run_id).data.tags
        assert tags["verdict.decision_gate"] == "stop" and tags["xraydet.status"] == "stopped"
    assert "decision_gate" in out.output and result.status in out.output

    bad = CliRunner().invoke(app, ["train", str(job_file), "--set", "epochz=3"])
    assert isinstance(bad.exception, ConfigError) and "epochz" in str(bad.exception)


def test_sigkill_mid_epoch_then_resume(tiny_data: Path, mlflow_home: Path, tmp_path: Path) -> None:
    body = tiny_job(
        tiny_data,
        gate={"decision_epoch": 2, "continue_above": 0.0, "stop_below": 0.0},
        hooks=[{"name": "test_epoch_marker"}],
    )
    run_dir = tmp_path / "run"
    script = (
        "import json, sys; from pathlib import Path\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import training_support  # registers the marker hook\n"
        "from xraydet.training import job_from_dict, run_training\n"
        "run_training(job_from_dict(json.loads(sys.argv[1])), Path(sys.argv[2]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(body), str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "marker_epoch_2").exists():  # epoch 1 saved, epoch 2's first batch done
            assert proc.poll() is None, "training process ended before it could be killed"
            assert time.monotonic() < deadline, "training did not reach epoch 2 in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    killed_state = json.loads((run_dir / "state.json").read_text())
    assert killed_state["epoch"] == 1

    result = resume_training(run_dir)

    assert result.status == "completed", result.stop_reason
    assert (result.epochs_completed, result.epochs_planned) == (3, 3)
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1, 2, 3]
    assert result.resumes[0]["from_epoch"] == 1
    assert result.mlflow_run_id == killed_state["mlflow_run_id"]  # the same MLflow run continues
    steps = sorted(m.step for m in mlflow_client().get_metric_history(result.mlflow_run_id, "map50"))
    assert steps == [1, 2, 3]
    assert [v.epoch for v in result.verdicts if v.hook == "decision_gate"] == [2]
    # epoch 1's loop figures survived the kill in state.json; epoch 2 started the resumed process up
    assert all(r["train_images_per_s"] > 0 for r in result.history)
    assert result.throughput["train_images_per_s"] == result.history[2]["train_images_per_s"]

    from ultralytics import YOLO

    from xraydet.data.dataset import load_dataset

    model = YOLO(str(result.best_weights))
    image = load_dataset(tiny_data).images("val")[0]
    predictions = model.predict(str(image), imgsz=160, device="cpu", verbose=False)
    assert len(predictions) == 1 and predictions[0].boxes is not None


def test_extend_a_finished_run(tiny_data: Path, mlflow_home: Path, tmp_path: Path) -> None:
    body = tiny_job(tiny_data, epochs=2, warmup_epochs=0, lrf=0.1, gate={"enabled": False})
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(body), run_dir)
    assert first.status == "completed" and first.epochs_completed == 2
    with pytest.raises(Exception, match="must exceed"):
        resume_training(run_dir, epochs=2)
    assert resume_training(run_dir).epochs_completed == 2  # nothing left to do without --epochs

    extended = resume_training(run_dir, epochs=3)

    assert extended.status == "completed"
    assert (extended.epochs_completed, extended.epochs_planned) == (3, 3)
    assert [r["epoch"] for r in extended.history] == [1, 2, 3]
    assert extended.history[:2] == first.history
    assert extended.resumes[-1] == {"checkpoint": "resume.pt", "from_epoch": 2, "epochs": 3, "extended": True}
    # The third epoch follows Ultralytics' linear schedule of a 3-epoch run: lr0 * ((1 - 2/3)(1 - lrf) + lrf).
    assert extended.history[2]["lr_pg0"] == pytest.approx(0.002 * ((1 - 2 / 3) * (1 - 0.1) + 0.1), rel=1e-3)
    assert torch.load(run_dir / "weights" / "resume.pt", weights_only=False)["train_args"]["epochs"] == 3
    assert extended.mlflow_run_id == first.mlflow_run_id


def test_a_run_killed_after_its_last_epoch_is_finished_without_training(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    gate = {"decision_epoch": 2, "continue_above": 0.0, "stop_below": 0.0}
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(tiny_job(tiny_data, epochs=2, gate=gate)), run_dir)
    assert first.status == "completed"
    # Killed in Ultralytics' final validation: checkpoints already stripped, no summary, and the last epoch
    # never reached state.json.
    for summary in (run_dir / "summary.json", run_dir / "weights" / "summary.json"):
        summary.unlink()
    state = json.loads((run_dir / "state.json").read_text())
    state.update(epoch=1, hooks={}, verdicts=[v for v in state["verdicts"] if v["epoch"] < 2])
    (run_dir / "state.json").write_text(json.dumps(state))
    mtime = (run_dir / "weights" / "best.pt").stat().st_mtime_ns

    again = resume_training(run_dir)

    assert again.status == "completed" and again.epochs_completed == 2, again.stop_reason
    assert (run_dir / "weights" / "best.pt").stat().st_mtime_ns == mtime  # nothing trained again
    assert again.history == first.history
    assert [v.epoch for v in again.verdicts if v.hook == "decision_gate"] == [2]  # replayed
    assert load_run_result(run_dir) == again
    assert mlflow_client().get_run(again.mlflow_run_id).info.status == "FINISHED"


def test_cuda_oom_retries_with_half_the_batch_from_the_last_checkpoint(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    body = tiny_job(tiny_data, epochs=2, batch=8, hooks=[{"name": "test_inject_oom", "params": {"epoch": 1}}])
    body["gate"] = {"decision_epoch": 2, "continue_above": 0.0, "stop_below": 0.0}
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(body), run_dir)

    assert result.status == "completed", result.stop_reason
    assert result.epochs_completed == 2
    assert len(result.retries) == 1
    retry = result.retries[0]
    assert (retry["batch_from"], retry["batch_to"], retry["from_epoch"]) == (8, 4, 1)
    assert "OutOfMemoryError" in retry["error"]
    assert torch.load(run_dir / "weights" / "resume.pt", weights_only=False)["train_args"]["batch"] == 4
    assert [r["epoch"] for r in result.history] == [1, 2]
    # epoch 1's metrics were interrupted by the error before reaching MLflow; the summary step logs them
    steps = sorted(m.step for m in mlflow_client().get_metric_history(result.mlflow_run_id, "map50"))
    assert steps == [1, 2]


def test_a_cuda_oom_retry_keeps_the_timeout_deadline(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """The first attempt uses up the whole budget before running out of memory: the retry gets no new one."""
    oom = {"name": "test_inject_oom", "params": {"epoch": 1, "sleep_s": 20.0}}
    body = tiny_job(tiny_data, epochs=2, batch=8, timeout_s=20, gate={"enabled": False}, hooks=[oom])
    result = run_training(job_from_dict(body), tmp_path / "run")

    assert len(result.retries) == 1 and result.retries[0]["from_epoch"] == 1
    assert result.status == "timed_out", result.stop_reason
    assert "deadline of 20s reached during epoch 2" in (result.stop_reason or "")
    assert result.epochs_completed == 2  # the cut-short epoch is validated and saved, resumable
    # epoch 1, replayed into the retry's hooks, is not judged against the deadline again
    assert [(v.epoch, v.decision) for v in result.verdicts if v.hook == "timeout"] == [(2, "stop")]


def test_cuda_oom_at_the_minimum_batch_fails_with_the_reason(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    """Out of memory while training epoch 1 (of 1) at the minimum batch: nothing left to halve. (After the
    last epoch's checkpoint the run would be finished instead: tests/training/test_oom_edges.py.)"""
    oom = {"name": "test_inject_oom", "params": {"epoch": 1, "in_batch": True}}
    body = tiny_job(tiny_data, epochs=1, batch=4, hooks=[oom])
    result = run_training(job_from_dict(body), tmp_path / "run")
    assert result.status == "failed"
    assert "OutOfMemoryError" in (result.stop_reason or "") and result.retries == []
    assert mlflow_client().get_run(result.mlflow_run_id).info.status == "FAILED"


def test_timeout_stops_cleanly_and_the_run_resumes(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    body = tiny_job(tiny_data, epochs=3, timeout_s=0.5, gate={"enabled": False})
    run_dir = tmp_path / "run"
    result = run_training(job_from_dict(body), run_dir)
    assert result.status == "timed_out"
    assert result.epochs_completed == 1 and "timeout" in (result.stop_reason or "")
    assert find_resume_checkpoint(run_dir).epochs_done == 1  # type: ignore[union-attr]

    again = resume_training(run_dir)  # a fresh 0.5 s budget: one more (cut) epoch
    assert again.status == "timed_out" and again.epochs_completed == 2
    assert [r["epoch"] for r in again.history] == [1, 2]


@pytest.mark.parametrize("state_lost", [False, True])
def test_a_plain_resume_of_a_run_a_hook_stopped_stays_stopped(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path, state_lost: bool
) -> None:
    gate = {"decision_epoch": 1, "continue_above": 1.0, "stop_below": 1.0}  # no 1-epoch model reaches 1.0
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(tiny_job(tiny_data, epochs=2, gate=gate)), run_dir)
    assert first.status == "stopped" and first.epochs_completed == 1
    (run_dir / "summary.json").unlink()  # killed after the stop, before the summary
    if state_lost:  # ... and before the gate's epoch reached state.json: replaying it gives the stop again
        state = json.loads((run_dir / "state.json").read_text())
        state.update(epoch=0, hooks={}, verdicts=[])
        (run_dir / "state.json").write_text(json.dumps(state))

    again = resume_training(run_dir)

    assert again.status == "stopped" and again.epochs_completed == 1, again.stop_reason
    assert (again.stop_reason or "").startswith("decision_gate at epoch 1")
    assert [r["epoch"] for r in read_results_csv(run_dir / "results.csv")] == [1]
    assert load_run_result(run_dir) == again
    assert [(v.hook, v.epoch) for v in again.verdicts if v.decision == "stop"] == [("decision_gate", 1)]
    if not state_lost:  # asking for more epochs goes on anyway
        extended = resume_training(run_dir, epochs=2)
        assert extended.status == "completed" and extended.epochs_completed == 2


def test_resume_from_an_older_checkpoint_judges_the_retrained_epochs_again(
    tiny_data: Path, mlflow_home: Path, tmp_path: Path
) -> None:
    gate = {"decision_epoch": 2, "continue_above": 1.0, "stop_below": 0.0}  # warns, never stops
    body = tiny_job(tiny_data, epochs=3, gate=gate, hooks=[{"name": "test_stamp"}])
    run_dir = tmp_path / "run"
    first = run_training(job_from_dict(body), run_dir)
    assert first.status == "completed" and first.verdict("decision_gate").epoch == 2  # type: ignore[union-attr]
    for name in ("last.pt", "resume.pt", "epoch003.pt", "epoch002.pt"):  # torn by a kill: epoch001.pt is left
        path = run_dir / "weights" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])

    again = resume_training(run_dir)

    assert again.status == "completed" and again.resumes[-1]["checkpoint"] == "epoch001.pt"
    assert [r["epoch"] for r in again.history] == [1, 2, 3]
    stamps = [(v.epoch, v.values["token"]) for v in again.verdicts if v.hook == "test_stamp"]
    old, new = stamps[0][1], stamps[-1][1]
    assert old != new and stamps == [(1, old), (2, new), (3, new)]  # epochs 2-3 only as retrained
    gates = [i for i, v in enumerate(again.verdicts) if v.hook == "decision_gate"]
    assert len(gates) == 1
    verdict = again.verdicts[gates[0]]
    assert verdict.epoch == 2 and verdict.values["map50"] == pytest.approx(again.history[1]["map50"])
    next_stamp = next(v for v in again.verdicts[gates[0] :] if v.hook == "test_stamp")
    assert (next_stamp.epoch, next_stamp.values["token"]) == (2, new)  # judged by the resumed training


def step(metric: Any) -> int:
    return int(metric.step)
