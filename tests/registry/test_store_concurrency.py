"""Several xraydet processes starting at once on a fresh SQLite store: each gets its run, none crashes.

MLflow creates the store's tables on first use; without xraydet's lock around that, processes starting
together broke each other's migrations (three of three trials failed before the fix, on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = """
import sys, time
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.001)
from xraydet.training.mlflow_logger import MlflowRunLogger
logger = MlflowRunLogger("concurrent", sys.argv[2])
logger.finish("completed")
print(logger.run_id)
"""


@pytest.mark.slow
def test_processes_starting_together_share_a_fresh_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["XRAYDET_HOME"] = str(tmp_path)
    start = time.time() + 8  # every interpreter has imported xraydet and MLflow by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(start), f"run-{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    run_ids = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(run_ids) == 3

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("concurrent")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == run_ids
    assert {r.info.status for r in runs} == {"FINISHED"}
