"""Registry fixtures: a fresh MLflow SQLite store per test (copied from one migrated template, which saves the
~3 s of migrations a new database costs), a deliberately trigger-happy model, and gate policies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite database."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return db


@pytest.fixture
def registry_home(tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XRAYDET_HOME and MLFLOW_TRACKING_URI pointing at a fresh SQLite store under ``tmp_path``."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy2(mlflow_template, runs / "mlflow.db")
    monkeypatch.setenv("XRAYDET_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{runs / 'mlflow.db'}")
    return tmp_path


@pytest.fixture
def lenient_policy():
    """A gate policy with every criterion switched off: the gate passes, so the comparison decides."""
    from xraydet.evaluation.gate import GatePolicy

    return GatePolicy(**dict.fromkeys(GatePolicy.model_fields))


@pytest.fixture(scope="session")
def eval_args(opixray_small: Path, negatives_dir: Path) -> dict:
    """A small, fixed evaluation set: 8 real threat scans and 8 threat-free bags."""
    return {"dataset": opixray_small, "negatives": negatives_dir, "max_images": 8, "seed": 0, "plots": False}


@pytest.fixture(scope="session")
def tiny_report(tiny_model: Path, eval_args: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real evaluation report folder of the tiny model."""
    from xraydet.evaluation import evaluate

    out = tmp_path_factory.mktemp("tiny_report") / "report"
    evaluate(tiny_model, eval_args["dataset"], negatives=[eval_args["negatives"]], max_images=4, out_dir=out,
             latency_samples=2, plots=False)
    return out
