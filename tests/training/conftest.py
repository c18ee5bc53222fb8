"""Fixtures for the training tests: a tiny data set, an isolated MLflow store, small job mappings."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
if (
    str(HERE) not in sys.path
):  # training_support is imported by name, here and by the subprocess test's script
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def _mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the session (each new store costs seconds of migrations); runs are read by id."""
    home = tmp_path_factory.mktemp("xraydet_home")
    (home / "runs").mkdir()
    return home


@pytest.fixture
def mlflow_home(_mlflow_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XRAYDET_HOME and the SQLite MLflow store in a temp folder (never the user's runs/)."""
    monkeypatch.setenv("XRAYDET_HOME", str(_mlflow_store))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{_mlflow_store / 'runs' / 'mlflow.db'}")
    return _mlflow_store


@pytest.fixture(scope="session")
def tiny_data(request: pytest.FixtureRequest) -> Path:
    """The synthetic set (48 train / 24 val, 160 px) if the synth module is there, else ``opixray_small``."""
    try:
        import xraydet.data.synth  # noqa: F401
    except ImportError:
        return request.getfixturevalue("opixray_small")
    return request.getfixturevalue("synth_yaml")


@pytest.fixture
def data_yaml(tmp_path: Path) -> Path:
    """A one-class data.yaml (with an empty image folder) beside the job files a test writes in tmp_path."""
    (tmp_path / "images" / "train").mkdir(parents=True)
    path = tmp_path / "data.yaml"
    path.write_text("train: images/train\nval: images/train\nnames: {0: knife}\n")
    return path


@pytest.fixture
def trained_epochs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The 1-based epochs Ultralytics starts, in order, over every training call of the test."""
    from ultralytics.utils.callbacks import base as ultralytics_callbacks

    epochs: list[int] = []

    def record(trainer: Any) -> None:
        epochs.append(int(trainer.epoch) + 1)

    defaults = ultralytics_callbacks.default_callbacks
    monkeypatch.setitem(defaults, "on_train_epoch_start", [*defaults["on_train_epoch_start"], record])
    yield epochs
