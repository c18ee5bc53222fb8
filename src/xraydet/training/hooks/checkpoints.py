"""Periodic checkpoints: copy ``weights/last.pt`` to ``weights/epochNNN.pt`` every N epochs.

Ultralytics' own ``save_period`` names files by 0-based epoch (``epoch9.pt`` after ten epochs); this hook
names them by the number of epochs done (``epoch010.pt``), as a person reading the seed plan expects, and
copies atomically so a killed run never leaves a torn file. The copies keep the optimizer state, so any of
them can seed a resume.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from xraydet.config import NotBool
from xraydet.training.hooks.base import HookBase, TrainContext, register_hook

log = logging.getLogger(__name__)


def checkpoint_name(epoch: int) -> str:
    """``checkpoint_name(10) == "epoch010.pt"``"""
    return f"epoch{epoch:03d}.pt"


# The parameter, typed once with its range, and its default: the one source of both for the hook's
# constructor and for the job's ``checkpoint_every`` (:mod:`xraydet.training.job`).
CheckpointEvery = Annotated[
    int, NotBool, Field(ge=0, description="copy last.pt to weights/epochNNN.pt every N epochs; 0 = off")
]
CHECKPOINT_EVERY = 10


@register_hook
class PeriodicCheckpoint(HookBase):
    """Every ``every`` epochs (1-based count), keep a copy of ``last.pt``; ``every=0`` turns it off."""

    name = "checkpoints"

    def __init__(self, every: CheckpointEvery = CHECKPOINT_EVERY) -> None:
        self.every = every
        self.saved: list[str] = []

    def needs_checkpoint(self, ctx: TrainContext) -> bool:
        return self.every > 0 and ctx.epoch % self.every == 0

    def after_save(self, ctx: TrainContext) -> None:
        if not self.needs_checkpoint(ctx):
            return
        last = ctx.weights_dir / "last.pt"
        if not last.is_file():
            log.warning("checkpoints: %s missing at epoch %d, nothing to copy", last, ctx.epoch)
            return
        target = ctx.weights_dir / checkpoint_name(ctx.epoch)
        _atomic_copy(last, target)
        if target.name not in self.saved:
            self.saved.append(target.name)
        log.info("checkpoint %s written", target)

    def state_dict(self) -> dict[str, Any]:
        return {"saved": list(self.saved)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved = list(state.get("saved", []))


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
