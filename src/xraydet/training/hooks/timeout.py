"""The job's TIMEOUT: stop cleanly before the deadline with a resumable checkpoint.

Two checks: at the end of an epoch, stop if the next epoch would not finish in time (mean epoch time so far);
after a batch, stop if the deadline has passed (the epoch is cut short, validated and checkpointed by
Ultralytics, and the resumed run continues with the next epoch). The run's status becomes ``timed_out``.
With ``val_every`` > 1 the run only ends at an epoch's end on a validated epoch: ``needs_validation`` asks
for one when the next epoch looks too long; should the checkpoint in between push the estimate over anyway,
the run goes on and the after-batch deadline ends the next epoch, which Ultralytics then validates.
The deadline counts from the start of each training process, so a resumed run gets a fresh budget, as a
re-submitted job would; a CUDA out-of-memory retry inside the process does not (it keeps the deadline).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from xraydet.config import NotBool
from xraydet.training.history import is_validated
from xraydet.training.hooks.base import HookBase, TrainContext, Verdict, register_hook

# The deadline's type with its range: the one source of it for the hook's constructor and for the job's
# ``timeout_s`` / ``TIMEOUT`` (:mod:`xraydet.training.job`).
TimeoutSeconds = Annotated[
    float, NotBool, Field(gt=0, description="seconds from the start of each training process")
]


@register_hook
class Timeout(HookBase):
    name = "timeout"

    def __init__(self, timeout_s: TimeoutSeconds) -> None:
        self.timeout_s = float(timeout_s)
        self.epoch_times: list[float] = []
        self._epoch_start = 0.0
        self._fired = False

    def before_train(self, ctx: TrainContext) -> None:
        self._fired = False
        self.epoch_times = []

    def before_epoch(self, ctx: TrainContext) -> None:
        self._epoch_start = ctx.elapsed_s

    def after_batch(self, ctx: TrainContext) -> Verdict | None:
        if self._fired or ctx.elapsed_s < self.timeout_s:
            return None
        return self._stop(ctx, f"deadline of {self.timeout_s:.0f}s reached during epoch {ctx.epoch}")

    def needs_validation(self, ctx: TrainContext) -> bool:
        """The epoch this hook will end the run after must be validated (asked before validation)."""
        if self._fired:
            return False
        times = [*self.epoch_times, ctx.elapsed_s - self._epoch_start]
        # a quarter epoch of slack for the validation and checkpoint between this call and the decision
        return ctx.elapsed_s + 1.25 * sum(times) / len(times) > self.timeout_s

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        if ctx.replay:  # an epoch an earlier call trained: its time is not known here, and already spent
            return None
        self.epoch_times.append(ctx.elapsed_s - self._epoch_start)
        if self._fired or ctx.epoch >= ctx.epochs:
            return None
        mean = sum(self.epoch_times) / len(self.epoch_times)
        if ctx.elapsed_s + mean <= self.timeout_s or not is_validated(record):
            return None
        return self._stop(
            ctx,
            f"{ctx.elapsed_s:.0f}s used; another epoch (~{mean:.0f}s) would pass the "
            f"{self.timeout_s:.0f}s deadline",
        )

    def _stop(self, ctx: TrainContext, reason: str) -> Verdict:
        self._fired = True
        return Verdict(
            hook=self.name,
            epoch=ctx.epoch,
            decision="stop",
            reason=reason,
            values={"timeout_s": self.timeout_s, "elapsed_s": round(ctx.elapsed_s, 2)},
            status="timed_out",
        )
