"""Recording a training run in MLflow: params, per-epoch metrics, verdict tags and artifacts.

Uses an explicit ``MlflowClient`` on :func:`xraydet.tracking.configure_mlflow`'s URI (SQLite under the runs
folder by default, ``MLFLOW_TRACKING_URI`` for a server) rather than MLflow's global "active run", so nothing
else in the process is affected. A resumed run continues the same MLflow run.

Epochs trained again (a resume or an OOM retry from a checkpoint older than the epochs logged) replace their
old values: MLflow has no call that drops a logged metric value, so on a SQL store (SQLite by default) the
values after the checkpoint are deleted from its tables before training on (:meth:`forget_steps_after`), and
a metric's history holds each epoch once, as ``results.csv`` does. Another store (a tracking server) keeps
both; the tag ``xraydet.superseded_metrics`` then lists, per restart, the steps whose values logged before
its time are superseded by later ones.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from xraydet.training.hooks.base import Verdict

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000
ARTIFACT_PATTERNS = {
    "weights": ("weights/best.pt", "weights/last.pt"),
    "": (
        "results.csv",
        "results.png",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "summary.json",
        "verdicts.json",
        "job.yaml",
        "args.yaml",
    ),
}


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Flatten nested dicts to dotted keys with string values, as MLflow params need.

    Example:
        >>> flatten("gate", {"metric": "map50", "levels": {"stop": 0.3}})
        {'gate.metric': 'map50', 'gate.levels.stop': '0.3'}
    """
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: str(value)[:MAX_PARAM_CHARS]}


MAX_MARKS = 40  # superseded-metrics marks kept in the tag (about 2 kB, under MLflow's tag limit)


def _delete_steps_after(store: Any, run_id: str, step: int) -> int:
    """Delete ``run_id``'s metric values at steps after ``step`` from a SQL store, and set each metric's
    latest value (what the run's page shows) to the newest one left, as MLflow orders them (step, time,
    value)."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    with store.ManagedSessionMaker(read_only=False) as session:
        run_metrics = session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id)
        dropped = int(run_metrics.filter(SqlMetric.step > step).delete(synchronize_session=False))
        stale = session.query(SqlLatestMetric).filter(
            SqlLatestMetric.run_uuid == run_id, SqlLatestMetric.step > step
        )
        for latest in stale.all():
            newest = (
                run_metrics.filter(SqlMetric.key == latest.key)
                .order_by(SqlMetric.step.desc(), SqlMetric.timestamp.desc(), SqlMetric.value.desc())
                .first()
            )
            if newest is None:
                session.delete(latest)
                continue
            latest.value, latest.step = newest.value, newest.step
            latest.timestamp, latest.is_nan = newest.timestamp, newest.is_nan
    if dropped:
        log.info("MLflow run %s: dropped %d metric values of the steps after %d", run_id, dropped, step)
    return dropped


class MlflowRunLogger:
    """One MLflow run for one xraydet training run (across resumes and OOM retries)."""

    def __init__(self, experiment: str, run_name: str, run_id: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        from xraydet.tracking import configure_mlflow, ensure_experiment

        uri = configure_mlflow()
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        if run_id is not None:
            try:
                self.client.get_run(run_id)
                self.client.update_run(run_id, status="RUNNING")
                self.run_id = run_id
                return
            except Exception:
                log.warning("MLflow run %s not found in %s; starting a new one", run_id, uri)
        experiment_id = ensure_experiment(self.client, experiment)
        run = self.client.create_run(experiment_id, run_name=run_name, tags={"xraydet.kind": "train"})
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params that are not logged yet (MLflow params are write-once; changed values become tags)."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = {k: v for k, v in flatten("", params).items() if k not in existing}
        changed = {k: v for k, v in flatten("", params).items() if k in existing and existing[k] != v}
        items = [Param(k, v) for k, v in new.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        for key, value in changed.items():
            self.client.set_tag(self.run_id, f"param_update.{key}", value)

    def log_epoch(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step = int(record["epoch"])
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, step)
            for key, value in record.items()
            if key != "epoch" and isinstance(value, int | float) and math.isfinite(float(value))
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def forget_steps_after(self, step: int, logged_after: bool = True) -> int:
        """Drop the metric values this run logged at steps after ``step`` (epochs that are cut from
        ``results.csv`` and trained again); returns how many were dropped.

        Where the store cannot drop them (not a SQL store), they are marked superseded instead, in the tag
        ``xraydet.superseded_metrics`` (the latest :data:`MAX_MARKS` marks): values at those steps logged
        before this call's time; ``logged_after`` false (no step after ``step`` was logged) adds no mark.
        """
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if isinstance(store, SqlAlchemyStore):
            return _delete_steps_after(store, self.run_id, step)
        if logged_after:  # else nothing after ``step`` was logged: nothing is superseded
            self._mark_superseded(step)
        return 0

    def _mark_superseded(self, step: int) -> None:
        tag = "xraydet.superseded_metrics"
        try:
            marks = json.loads(self.client.get_run(self.run_id).data.tags.get(tag, "[]"))
        except json.JSONDecodeError:  # edited by hand: start the list again rather than fail the training
            marks = []
        marks = [
            *(marks if isinstance(marks, list) else []),
            {"after_step": step, "logged_before_ms": int(time.time() * 1000)},
        ]
        self.client.set_tag(
            self.run_id, tag, json.dumps(marks[-MAX_MARKS:])
        )  # whole JSON under the tag limit
        log.warning(
            "MLflow store cannot drop metric values: those of steps after %d logged so far are superseded by "
            "the values logged next (tag %s)",
            step,
            tag,
        )

    def log_verdicts(self, verdicts: list[Verdict]) -> None:
        """Tags ``verdict.<hook>`` (the decision), ``.reason``, ``.epoch`` and the numbers as ``.values``."""
        for verdict in verdicts:
            prefix = f"verdict.{verdict.hook}"
            self.client.set_tag(self.run_id, prefix, verdict.decision)
            self.client.set_tag(self.run_id, f"{prefix}.reason", verdict.reason[:5000])
            self.client.set_tag(self.run_id, f"{prefix}.epoch", str(verdict.epoch))
            self.client.set_tag(
                self.run_id, f"{prefix}.values", json.dumps(verdict.values, default=str)[:5000]
            )

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifacts(self, run_dir: Path) -> list[str]:
        """Upload the run's weights, results, plots and summary; returns what was logged."""
        logged = []
        for artifact_path, names in ARTIFACT_PATTERNS.items():
            for name in names:
                path = run_dir / name
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path), artifact_path or None)
                    logged.append(name)
        return logged

    def finish(self, status: str) -> None:
        mlflow_status = {"completed": "FINISHED", "stopped": "FINISHED", "timed_out": "KILLED"}.get(
            status, "FAILED"
        )
        self.client.set_tag(self.run_id, "xraydet.status", status)
        self.client.set_terminated(self.run_id, status=mlflow_status)
