"""xraydet against a real MLflow tracking server (``mlflow server`` on loopback, started for these tests):
training logs its run there, artifacts go through the server's proxied store, and the registry registers,
promotes, resolves and rolls back through HTTP. Nothing is written to the local SQLite setup's folders."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.net import free_port

from xraydet.registry import champion, list_models, list_versions, register_model, resolve_model, rollback
from xraydet.registry.store import client, set_champion

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real MLflow server: SQLite backend and a proxied artifact store in its own folder."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "art"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, root / "art"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def on_server(tracking_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    url, _ = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("XRAYDET_HOME", str(tmp_path))
    return tmp_path


def files_under(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file()}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_logs_its_run_and_artifacts_to_the_server(
    on_server: Path, tracking_server: tuple[str, Path], synth_yaml: Path
) -> None:
    from xraydet.training import job_from_dict, run_training

    job = job_from_dict(
        {
            "name": "remote",
            "model": "yolov8n.yaml",
            "data": str(synth_yaml),
            "epochs": 1,
            "batch": 8,
            "imgsz": 128,
            "device": "cpu",
            "workers": 0,
            "checkpoint_every": 0,
            "experiment": "xraydet-remote",
            "gate": {"enabled": False},
            "overrides": {"plots": False},
        }
    )
    result = run_training(job, on_server / "run")
    assert result.status == "completed", result.stop_reason

    run = client().get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert [m.step for m in client().get_metric_history(run.info.run_id, "map50")] == [1]
    listed = {a.path for a in client().list_artifacts(run.info.run_id)}
    assert {"summary.json", "results.csv", "job.yaml"} <= listed
    _, served_store = tracking_server
    assert {"summary.json", "results.csv", "best.pt"} <= files_under(served_store)
    assert not (on_server / "runs" / "mlartifacts").exists()  # the local setup's store stays untouched
    assert not (on_server / "runs" / "mlflow.db").exists()


def test_registry_round_trip_over_http(on_server: Path, tiny_model: Path, trigger_happy_model: Path) -> None:
    first = register_model(tiny_model, "xray-remote")
    second = register_model(trigger_happy_model, "xray-remote")
    assert [v.version for v in list_versions("xray-remote")] == [first, second]

    set_champion("xray-remote", first, [])
    set_champion("xray-remote", second, [first])
    assert champion("xray-remote") == second
    assert sha(resolve_model("xray-remote")) == sha(trigger_happy_model)
    assert sha(resolve_model(f"xray-remote/{first}")) == sha(tiny_model)
    # the weights came down through the server into the local model cache
    assert resolve_model("xray-remote").is_relative_to(on_server / "runs" / "model-cache")

    assert rollback("xray-remote") == first
    assert champion("xray-remote") == first and sha(resolve_model("xray-remote")) == sha(tiny_model)
    summary = next(m for m in list_models() if m.name == "xray-remote")
    assert (summary.champion, summary.n_versions) == (first, 2)
    assert not (on_server / "runs" / "mlflow.db").exists()
