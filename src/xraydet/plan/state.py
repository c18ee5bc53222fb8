"""A plan's progress on disk: ``state.json`` with one record per step, rewritten atomically after each change.

Each record keeps the step's resolved inputs, its outputs and their fingerprints, its outcome and the
transition it took. A finished step is skipped on resume while every fingerprinted output is intact: files
are hashed (SHA-256); folders (data sets) are fingerprinted by their listing of relative path, size and
modification time, which catches added, removed and rewritten files without reading thousands of images
(label caches Ultralytics adds while training are left out).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from xraydet.io import atomic_write_json, sha256_file
from xraydet.plan.transitions import TransitionDecision

STATE_FILE = "state.json"
PLAN_SNAPSHOT = "plan.yaml"

# Files tools add beside a data set without changing it: Ultralytics writes labels/<split>.cache when it
# trains on a set, which must not make the data step look changed.
DERIVED_SUFFIXES = (".cache", ".cache.npy")

StepStatus = Literal["pending", "running", "done", "failed", "interrupted"]
PlanStatus = Literal["running", "finished", "failed", "interrupted"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StepRecord(BaseModel):
    """Everything known about one step of the plan."""

    id: str
    kind: str
    title: str = ""
    phase: str | None = None
    status: StepStatus = "pending"
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    wall_time_s: float = 0.0
    gpu_hours: float = 0.0
    cost: float = 0.0
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    fingerprints: dict[str, str] = Field(default_factory=dict)
    outcome: dict[str, Any] = Field(default_factory=dict)
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    transition: TransitionDecision | None = None
    reused: bool = False
    error: str | None = None


class Session(BaseModel):
    """One ``plan run`` or ``plan resume`` invocation."""

    action: Literal["run", "resume"]
    started_at: str
    pid: int


class PlanState(BaseModel):
    """The plan's state file."""

    version: int = 1
    plan_name: str
    plan_fingerprint: str
    plan_file: str | None = None
    base_dir: str
    overrides: list[str] = Field(default_factory=list)
    status: PlanStatus = "running"
    current: str | None = None
    trail: list[str] = Field(default_factory=list)
    end: str | None = None
    created_at: str = Field(default_factory=now)
    updated_at: str = Field(default_factory=now)
    sessions: list[Session] = Field(default_factory=list)
    records: dict[str, StepRecord] = Field(default_factory=dict)

    def done_on_walk(self, step_id: str, walk: Sequence[str]) -> StepRecord | None:
        """``step_id``'s record if it finished and ``walk`` (the steps the current walk reached) holds it.

        A record an earlier session left done on a path this walk did not take (or has not reached yet) is
        not used: a resume must do what a fresh run of the same path does, never pick up a stale output.
        """
        record = self.records.get(step_id)
        return record if step_id in walk and record is not None and record.status == "done" else None

    def save(self, state_dir: Path) -> Path:
        self.updated_at = now()
        return atomic_write_json(Path(state_dir) / STATE_FILE, self.model_dump(mode="json"))


def load_state(state_dir: str | Path) -> PlanState:
    """Read ``state_dir/state.json``; a missing or damaged file raises a clear error."""
    from xraydet.plan.schema import PlanError

    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise PlanError(
            [f"no plan state here ({STATE_FILE} missing); start one with `xraydet plan run PLAN`"], state_dir
        )
    try:
        return PlanState.model_validate_json(path.read_bytes())  # bytes: bad UTF-8 is a ValidationError too
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(map(str, first["loc"]))
        problem = f"{key}: {first['msg']}" if key else first["msg"]
        raise PlanError([f"{STATE_FILE} is damaged: {problem}"], state_dir) from err


def fingerprint(path: str | Path) -> str | None:
    """``sha256:<hex>`` of a file, ``tree:<hex>`` of a folder listing, None when the path is gone.

    Example:
        >>> fingerprint("/no/such/file") is None
        True
    """
    path = Path(path)
    if path.is_file():
        return f"sha256:{sha256_file(path)}"
    if path.is_dir():
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(DERIVED_SUFFIXES):
                    continue
                full = Path(root) / name
                st = full.stat()
                digest.update(f"{full.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"tree:{digest.hexdigest()}"
    return None


def fingerprint_files(files: dict[str, Path]) -> dict[str, str]:
    """Fingerprints of a step's output files keyed ``name=path``; a missing output is an error."""
    found: dict[str, str] = {}
    for name, path in files.items():
        value = fingerprint(path)
        if value is None:
            raise FileNotFoundError(f"step output '{name}' was not written: {path}")
        found[f"{name}={Path(path).resolve()}"] = value
    return found


def outputs_intact(record: StepRecord) -> tuple[bool, str]:
    """Whether every fingerprinted output still matches; the reason when not."""
    for key, expected in record.fingerprints.items():
        name, _, path = key.partition("=")
        actual = fingerprint(path)
        if actual is None:
            return False, f"output '{name}' is gone ({path})"
        if actual != expected:
            return False, f"output '{name}' changed ({path})"
    return True, "outputs intact"
