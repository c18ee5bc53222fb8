"""Helpers of the training tests: a tiny job mapping and hooks registered in the real hook registry (as a
user's plugin would be). Imported by name (tests/training is put on sys.path by conftest)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from xraydet.training.hooks import HookBase, TrainContext, Verdict, register_hook


@register_hook
class EpochMarker(HookBase):
    """Writes ``run_dir/marker_epoch_N`` after the first batch of each epoch (so a test knows where it is)."""

    name = "test_epoch_marker"

    def after_batch(self, ctx: TrainContext) -> None:
        if ctx.batch_index == 0:
            Path(ctx.run_dir, f"marker_epoch_{ctx.epoch}").write_text(str(ctx.attempt))


@register_hook
class InjectOOM(HookBase):
    """Raises a real ``torch.cuda.OutOfMemoryError`` at the end of ``epoch`` (or, ``in_batch``, after its
    first batch; ``in_save``, right after its checkpoint) on the first attempt only, after ``sleep_s`` seconds
    (an attempt that used up time before it ran out of memory)."""

    name = "test_inject_oom"

    def __init__(
        self, epoch: int = 1, sleep_s: float = 0.0, in_batch: bool = False, in_save: bool = False
    ) -> None:
        self.epoch = epoch
        self.sleep_s = sleep_s
        self.in_batch = in_batch
        self.in_save = in_save
        self.raised = 0

    def after_batch(self, ctx: TrainContext) -> None:
        if self.in_batch and ctx.batch_index == 0:
            self._maybe_raise(ctx)

    def after_save(self, ctx: TrainContext) -> None:
        if self.in_save:
            self._maybe_raise(ctx)

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if not (self.in_batch or self.in_save):
            self._maybe_raise(ctx)

    def _maybe_raise(self, ctx: TrainContext) -> None:
        if ctx.attempt == 1 and ctx.epoch == self.epoch:
            time.sleep(self.sleep_s)
            self.raised += 1
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (injected by test)"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"raised": self.raised}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raised = int(state.get("raised", 0))


@register_hook
class BestWeightsWatcher(HookBase):
    """Records, after each epoch's save, a digest of ``weights/best.pt`` (to tell which epochs rewrote it)."""

    name = "test_best_watcher"

    def __init__(self) -> None:
        self.digests: dict[int, str] = {}

    def after_save(self, ctx: TrainContext) -> None:
        best = ctx.weights_dir / "best.pt"
        if best.is_file():
            self.digests[ctx.epoch] = hashlib.sha256(best.read_bytes()).hexdigest()
        Path(ctx.run_dir, "best_digests.json").write_text(json.dumps(self.digests))


@register_hook
class BatchWarning(HookBase):
    """A "warn" verdict after the first batch of ``epoch``, as a hook watching batches gives one."""

    name = "test_batch_warning"

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def after_batch(self, ctx: TrainContext) -> Verdict | None:
        if ctx.epoch != self.epoch or ctx.batch_index != 0:
            return None
        return Verdict(hook=self.name, epoch=ctx.epoch, decision="warn", reason="first batch")


@register_hook
class SaveRecorder(HookBase):
    """Appends each epoch for which Ultralytics wrote ``last.pt`` to ``run_dir/saved_epochs.json``."""

    name = "test_save_recorder"

    def after_save(self, ctx: TrainContext) -> None:
        path = Path(ctx.run_dir, "saved_epochs.json")
        saved = json.loads(path.read_text()) if path.is_file() else []
        path.write_text(json.dumps([*saved, ctx.epoch]))


@register_hook
class StopAt(HookBase):
    """Asks (gracefully) to stop at the end of ``epoch``, as a user's hook may on any epoch."""

    name = "test_stop_at"

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        if ctx.epoch != self.epoch:
            return None
        return Verdict(hook=self.name, epoch=ctx.epoch, decision="stop", reason="scripted stop")


@register_hook
class VerdictStamp(HookBase):
    """A "continue" verdict every epoch, stamped with a token of this hook object (one per training call) and
    the attempt (OOM retries keep the hook objects), so a test can tell which call judged an epoch."""

    name = "test_stamp"

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict:
        return Verdict(
            hook=self.name,
            epoch=ctx.epoch,
            decision="continue",
            reason="stamp",
            values={"token": self.token, "attempt": ctx.attempt},
        )


def tiny_job(data: Path, **extra: Any) -> dict[str, Any]:
    """A CPU job of a few seconds per epoch with every hook active and early."""
    job: dict[str, Any] = {
        "name": "tiny",
        "model": "yolov8n.yaml",
        "data": str(data),
        "epochs": 3,
        "batch": 16,
        "imgsz": 160,
        "device": "cpu",
        "workers": 0,
        "checkpoint_every": 1,
        "timeout_s": 900,
        "gate": {"decision_epoch": 2},
        "red_flags": {
            "oscillation": {"window": 3},
            "plateau": {"patience": 1},
            "overfitting": {"window": 3},
        },
        "plots": False,
    }
    job.update(extra)
    return job
