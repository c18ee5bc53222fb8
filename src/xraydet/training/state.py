"""A run's own bookkeeping, ``run_dir/state.json``: hook states, verdicts, retries, resumes, MLflow run id.

Written atomically after every epoch, so a run killed at any point (``kill -9`` included) leaves a state
that is at most one epoch behind its newest checkpoint; a resume replays the missing epochs from
``results.csv`` into the hooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from xraydet.errors import XrayDetError
from xraydet.io import atomic_write_json
from xraydet.training.hooks.base import Verdict

STATE_FILE = "state.json"


class RunState(BaseModel):
    epoch: int = 0  # epochs whose hook state is recorded here
    hooks: dict[str, Any] = Field(default_factory=dict)
    verdicts: list[Verdict] = Field(default_factory=list)
    retries: list[dict[str, Any]] = Field(default_factory=list)
    resumes: list[dict[str, Any]] = Field(default_factory=list)
    train_args: dict[str, Any] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    mlflow_epochs: list[int] = Field(default_factory=list)  # epochs whose metrics are in MLflow
    # epoch -> its training-loop figures (training/throughput.py); results.csv has no column for them
    loop_figures: dict[int, dict[str, Any]] = Field(default_factory=dict)
    # best.pt's metrics from the final validation of the latest training (empty until it has run)
    final_eval: dict[str, float] = Field(default_factory=dict)
    wall_time_s: float = 0.0
    # the epochs the loop planned at the latest epoch: Ultralytics re-plans them to fit a `time` budget
    epochs_planned: int | None = None

    def save(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / STATE_FILE, self.model_dump(mode="json"))
        atomic_write_json(run_dir / "verdicts.json", [v.model_dump(mode="json") for v in self.verdicts])

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = run_dir / STATE_FILE
        if not path.is_file():
            raise XrayDetError(f"{run_dir}: no {STATE_FILE}; not a run folder made by `xraydet train`")
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as err:
            raise XrayDetError(f"{path}: unreadable run state: {err}") from err
