"""Plan-runner fixtures: small step kinds of our own, registered into the real registry for the runner tests
(detectron2's way of testing registries), and an isolated runs folder for the end-to-end plans."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from xraydet.io import atomic_write_text
from xraydet.plan.steps import StepContext, StepResult, register_step_kind, unregister_step_kind


class ScoreParams(BaseModel):
    """``score``: writes its value to a file and reports it as ``final.map50``."""

    model_config = ConfigDict(extra="forbid")

    value: float
    status: str = "completed"


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = "boom"
    once: bool = False


def _calls(ctx: StepContext) -> Path:
    return ctx.state_dir / "calls.jsonl"


def _note_call(ctx: StepContext) -> None:
    path = _calls(ctx)
    previous = path.read_text() if path.exists() else ""
    entry = {"step": ctx.step.id, "previous": ctx.previous.status if ctx.previous else None}
    atomic_write_text(path, previous + json.dumps(entry) + "\n")


def score(ctx: StepContext, params: ScoreParams) -> StepResult:
    _note_call(ctx)
    out = atomic_write_text(ctx.work_dir / "score.txt", f"{params.value}\n")
    history = [{"epoch": e, "map50": params.value * e / 3} for e in (1, 2, 3)]
    return StepResult(
        outputs={"score_file": out},
        files={"score": out},
        outcome={"status": params.status, "final": {"map50": params.value}},
        decisions=[{"what": "score", "decision": "measured", "values": {"value": params.value}}],
        details={"history": history},
    )


def fail(ctx: StepContext, params: FailParams) -> StepResult:
    """Raises, or with ``once`` raises only on the first attempt."""
    _note_call(ctx)
    if params.once and ctx.previous is not None:
        return StepResult(outcome={"recovered": True})
    raise RuntimeError(params.message)


def interrupt(ctx: StepContext, params: FailParams) -> StepResult:
    """Simulates Ctrl-C on the first attempt."""
    _note_call(ctx)
    if ctx.previous is None:
        raise KeyboardInterrupt
    return StepResult(outcome={"resumed_after": ctx.previous.status})


@pytest.fixture
def test_kinds() -> Iterator[None]:
    register_step_kind("score", ScoreParams, "test: report a score")(score)
    register_step_kind("explode", FailParams, "test: raise")(fail)
    register_step_kind("ctrl-c", FailParams, "test: interrupt once")(interrupt)
    yield
    for name in ("score", "explode", "ctrl-c"):
        unregister_step_kind(name)


@pytest.fixture
def xraydet_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runs folder (MLflow SQLite store, registry, promotions) for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("XRAYDET_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XRAYDET_CACHE_DIR", str(home / "cache"))
    return home
