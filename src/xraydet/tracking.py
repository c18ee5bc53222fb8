"""Where runs and models are recorded: one MLflow tracking URI shared by training and the registry.

``MLFLOW_TRACKING_URI`` wins when set (a tracking server, say). Otherwise a SQLite file under the project's
runs folder (``$XRAYDET_HOME/runs`` or ``./runs``) is used; MLflow needs four slashes for an absolute path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def runs_root() -> Path:
    """The folder that holds training runs, the SQLite tracking file and MLflow artifacts."""
    return Path(os.environ.get("XRAYDET_HOME", ".")).resolve() / "runs"


def tracking_uri() -> str:
    """The MLflow tracking URI in force (env first, then ``sqlite:///<runs>/mlflow.db``).

    Example:
        >>> "MLFLOW_TRACKING_URI" in os.environ or tracking_uri().startswith("sqlite:////")
        True
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root() -> str:
    """Where a local (SQLite) setup keeps artifacts; a server chooses its own."""
    return (runs_root() / "mlartifacts").as_uri()


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a store on this machine (SQLite or files), whose artifacts xraydet places itself."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def configure_mlflow() -> str:
    """Point MLflow at :func:`tracking_uri` (and the registry at the same store); return the URI.

    A SQLite store's tables are created, or upgraded, by one process at a time (see :func:`sqlite_lock`).
    """
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith("sqlite:///") and uri not in _READY_STORES:
        from mlflow.tracking import MlflowClient

        with sqlite_lock(Path(uri.removeprefix("sqlite:///"))):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # the first use creates or migrates the tables
            client.search_registered_models(max_results=1)
        _READY_STORES.add(uri)
    return uri


# SQLite stores this process has opened under the lock; MLflow keeps its own engine per URI after that.
_READY_STORES: set[str] = set()


@contextlib.contextmanager
def sqlite_lock(db: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` (where the OS has advisory locks).

    MLflow creates a SQLite store's tables on first use. Two processes doing that at once (two trainings
    started together on a fresh machine) break each other's migrations: "table _alembic_tmp_tags already
    exists", "Online migration expected to match one row".
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent first use stays unguarded
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(client: Any, name: str) -> str:
    """The id of MLflow experiment ``name``, created if missing (also when another process creates it first).

    A local store keeps its artifacts under the runs folder; a tracking server chooses its own.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = artifact_root() if is_local(client.tracking_uri) else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)
