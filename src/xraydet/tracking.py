"""Where runs and models are recorded: one MLflow tracking URI shared by training and the registry.

``MLFLOW_TRACKING_URI`` wins when set (a tracking server, say). Otherwise a SQLite file under the project's
runs folder (``$XRAYDET_HOME/runs`` or ``./runs``) is used; MLflow needs four slashes for an absolute path.
"""

from __future__ import annotations

import os
from pathlib import Path


def runs_root() -> Path:
    """The folder that holds training runs, the SQLite tracking file and MLflow artifacts."""
    return Path(os.environ.get("XRAYDET_HOME", ".")).resolve() / "runs"


def tracking_uri() -> str:
    """The MLflow tracking URI in force (env first, then ``sqlite:///<runs>/mlflow.db``).

    Example:
        >>> os.environ.pop("MLFLOW_TRACKING_URI", None) and None
        >>> tracking_uri().startswith("sqlite:////")
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


def configure_mlflow() -> str:
    """Point MLflow at :func:`tracking_uri` (and the registry at the same store); return the URI."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri
