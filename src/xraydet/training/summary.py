"""The outcome of a training run: ``RunResult``, in ``run_dir/summary.json`` and ``weights/summary.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from xraydet.errors import XrayDetError
from xraydet.io import atomic_write_json
from xraydet.training.history import METRIC_KEYS
from xraydet.training.hooks.base import Verdict

Status = Literal["completed", "stopped", "timed_out", "failed"]


class RunResult(BaseModel):
    """What a run did and where its outputs are. ``verdicts`` lists every hook verdict in epoch order."""

    run_dir: Path
    status: Status
    stop_reason: str | None = None
    epochs_completed: int = 0
    epochs_planned: int
    best_weights: Path | None = None
    last_weights: Path | None = None
    final_metrics: dict[str, float] = Field(default_factory=dict)  # the last validated epoch's
    # best.pt's metrics from the final validation after the last epoch (empty if it did not run)
    final_eval: dict[str, float] = Field(default_factory=dict)
    best_metrics: dict[str, float] = Field(default_factory=dict)
    best_epoch: int | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)
    # median training-loop images/s and loader wait over the run (each process's first epoch left out)
    throughput: dict[str, float] = Field(default_factory=dict)
    verdicts: list[Verdict] = Field(default_factory=list)
    retries: list[dict[str, Any]] = Field(default_factory=list)  # `cause`: oom, nan, oom-final-val
    resumes: list[dict[str, Any]] = Field(default_factory=list)  # each resume: from checkpoint, epoch, epochs
    train_args: dict[str, Any] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    wall_time_s: float = 0.0

    def verdict(self, hook: str) -> Verdict | None:
        """The latest verdict of ``hook`` (e.g. ``"decision_gate"``), if any; a note that a gate never judged
        (``values.judged`` false: the run ended before its decision epoch) is not a verdict."""
        found = [v for v in self.verdicts if v.hook == hook and v.judged]
        return found[-1] if found else None


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
    """The four headline metrics of one history record (missing or non-finite ones left out)."""
    out = {}
    for key in METRIC_KEYS:
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


def best_record(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch Ultralytics keeps as best.pt: highest fitness, mAP50-95 for detection.

    On ties the latest epoch wins: Ultralytics rewrites best.pt whenever an epoch's fitness equals the best.
    """
    scored = [r for r in history if isinstance(r.get("map50_95"), float) and math.isfinite(r["map50_95"])]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["map50_95"], r["epoch"]))


def write_run_result(result: RunResult) -> Path:
    """Write the summary to ``run_dir/summary.json`` and, when weights exist, ``weights/summary.json``."""
    body = result.model_dump(mode="json")
    path = atomic_write_json(result.run_dir / "summary.json", body)
    if (result.run_dir / "weights").is_dir():
        atomic_write_json(result.run_dir / "weights" / "summary.json", body)
    return path


def load_run_result(run_dir: str | Path) -> RunResult:
    """Read ``run_dir/summary.json`` (or a path to the summary file itself)."""
    path = Path(run_dir)
    path = path / "summary.json" if path.is_dir() else path
    if not path.is_file():
        raise XrayDetError(f"{path}: no run summary (is this a run folder made by `xraydet train`?)")
    try:
        return RunResult.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError) as err:
        raise XrayDetError(f"{path}: not a valid run summary: {err}") from err
