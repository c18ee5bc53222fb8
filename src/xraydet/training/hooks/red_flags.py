"""The seed plan's red flags, measured rather than eyeballed.

- NaN/inf loss ("Loss = NaN -> training failed"): checked after every batch, stops at once by default.
- Oscillation ("loss oscillating wildly -> LR too high"): over the last ``window`` epochs, the share of sign
  changes between successive first differences, and their mean size relative to the mean level.
- Plateau ("mAP50 stuck", "no improvement after N epochs"): no new best of the metric for ``patience`` epochs.
- Overfitting ("train/mAP50 >> val/mAP50"): over a window, the train loss trend falls while the val loss
  trend rises by at least ``min_val_rise`` (relative).
- A starved loader (not in the seed, found on the GPU): the training loop waits for its data loader for a
  large share of the time, so the model idles and more loader workers, a RAM cache or a cheaper augmentation
  would buy epochs.

Each measurement is a pure function, unit-tested on recorded histories; the hooks fire when a condition
becomes true (once per episode, re-armed when it clears: the NaN flag by an epoch whose losses are all
finite, the loader flag only by a new training attempt) and log the epoch and the numbers.

The metric flags judge validated epochs only: with ``val_every`` N > 1, ``window`` and ``patience`` count
validations (N epochs apart), and their messages name the epochs the numbers came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from xraydet.config import NotBool
from xraydet.training.history import RecordKey, is_validated
from xraydet.training.hooks.base import HookBase, TrainContext, Verdict, register_hook


def oscillation(values: Sequence[float]) -> tuple[float, float]:
    """Sign-change ratio of the first differences and their mean size relative to the mean level.

    Example:
        >>> oscillation([1.0, 2.0, 1.0, 2.0, 1.0])
        (1.0, 0.7142857142857143)
        >>> oscillation([1.0, 2.0, 3.0, 4.0])[0]
        0.0
    """
    v = np.asarray(values, dtype=float)
    d = np.diff(v)
    nz = d[d != 0]
    ratio = float(np.mean(np.sign(nz[1:]) != np.sign(nz[:-1]))) if len(nz) >= 2 else 0.0
    level = float(np.mean(np.abs(v))) if len(v) else 0.0
    amplitude = float(np.mean(np.abs(d))) / level if level > 0 and len(d) else 0.0
    return ratio, amplitude


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per epoch. Example: ``slope([1, 2, 3]) == 1.0``."""
    y = np.asarray(values, dtype=float)
    if len(y) < 2:
        return 0.0
    x = np.arange(len(y), dtype=float)
    return float(np.polyfit(x, y, 1)[0])


def epochs_since_best(values: Sequence[float], min_delta: float = 0.0) -> int:
    """Epochs since the last value that beat every earlier one by more than ``min_delta``.

    Example:
        >>> epochs_since_best([0.1, 0.3, 0.3, 0.29])
        2
    """
    best, best_i = -math.inf, -1
    for i, value in enumerate(values):
        if value > best + min_delta:
            best, best_i = value, i
    return len(values) - 1 - best_i if best_i >= 0 else len(values)


def _points(history: list[dict[str, Any]], *keys: str) -> list[tuple[int, list[float]]]:
    """(epoch, values of ``keys``) of the records where every one of ``keys`` is a finite number."""
    out = []
    for r in history:
        values = [float(r[k]) for k in keys if k in r and math.isfinite(float(r[k]))]
        if len(values) == len(keys):
            out.append((int(r["epoch"]), values))
    return out


Action = Literal["warn", "stop"]

# Each flag's parameters, typed once with their ranges, and their defaults: the one source of both for the
# flags' constructors (so for a job's extra ``hooks:``, checked by ``build_hook``) and for the job's
# ``red_flags.*`` settings (:mod:`xraydet.training.job`).
FLAG_ACTION: Action = "warn"  # every flag but the NaN one only warns by default
NAN_ACTION: Action = "stop"

MetricWindow = Annotated[
    int, NotBool, Field(ge=3, description="validated epochs looked at (all if val_every=1)")
]
SignChangeRatio = Annotated[
    float, NotBool, Field(ge=0, le=1, description="share of sign changes between successive steps that fires")
]
RelAmplitude = Annotated[
    float, NotBool, Field(ge=0, description="mean step relative to the mean level that fires")
]
OSCILLATION_METRICS: tuple[RecordKey, ...] = ("map50", "val_loss")
OSCILLATION_WINDOW = 10
MIN_SIGN_CHANGE_RATIO = 0.6
MIN_REL_AMPLITUDE = 0.05

Patience = Annotated[int, NotBool, Field(ge=1, description="validations with no new best")]
MinDelta = Annotated[float, NotBool, Field(ge=0, description="the least gain that counts as a new best")]
PLATEAU_METRIC: RecordKey = "map50"
PLATEAU_PATIENCE = 20
PLATEAU_MIN_DELTA = 0.001

MinValRise = Annotated[float, NotBool, Field(ge=0, description="relative rise of val loss over the window")]
OVERFIT_WINDOW = 10
MIN_VAL_RISE = 0.02

LoaderWindow = Annotated[int, NotBool, Field(ge=2, description="epochs looked at (every epoch is measured)")]
WaitFraction = Annotated[
    float, NotBool, Field(gt=0, le=1, description="median share of the loop spent waiting for the next batch")
]
LOADER_WINDOW = 5
MAX_WAIT_FRAC = 0.25


class _Flag(HookBase):
    """Shared episode logic: fire when the condition turns true, re-arm when it turns false."""

    def __init__(self, action: Action = FLAG_ACTION) -> None:
        self.action = action
        self.active: dict[str, bool] = {}
        self.fired: list[dict[str, Any]] = []

    def _fire(
        self, key: str, condition: bool, ctx: TrainContext, reason: str, values: dict[str, Any]
    ) -> Verdict | None:
        was = self.active.get(key, False)
        self.active[key] = condition
        if not condition or was:
            return None
        verdict = Verdict(
            hook=self.name,
            epoch=ctx.epoch,
            decision="stop" if self.action == "stop" else "warn",
            reason=reason,
            values=values,
        )
        self.fired.append(verdict.model_dump())
        return verdict

    def state_dict(self) -> dict[str, Any]:
        return {"active": dict(self.active), "fired": list(self.fired)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.active = dict(state.get("active", {}))
        self.fired = list(state.get("fired", []))


@register_hook
class NanLossFlag(_Flag):
    """A NaN or infinite loss, in a batch or in an epoch's train/val losses: stops at once by default.

    With ``action="warn"`` it warns once per episode: the first NaN batch or epoch warns, and an epoch with
    no NaN batch whose losses are all finite (Ultralytics recovered) re-arms it.
    """

    name = "nan_loss"

    def __init__(self, action: Action = NAN_ACTION) -> None:
        super().__init__(action)
        self._nan_batch_epoch: int | None = None  # the last epoch with a NaN batch

    def after_batch(self, ctx: TrainContext) -> Verdict | None:
        if ctx.loss is None or math.isfinite(ctx.loss):
            return None
        self._nan_batch_epoch = ctx.epoch
        return self._nan_verdict(ctx, {"loss": ctx.loss, "batch": ctx.batch_index}, "training loss")

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        losses = {k: v for k, v in record.items() if k.endswith("_loss")}
        bad = {k: v for k, v in losses.items() if not math.isfinite(float(v))}
        if not bad:
            if losses and self._nan_batch_epoch != ctx.epoch:
                self.active["nan"] = False  # a finite epoch ends the episode
            return None
        return self._nan_verdict(ctx, bad, ", ".join(sorted(bad)))

    def _nan_verdict(self, ctx: TrainContext, values: dict[str, Any], what: str) -> Verdict | None:
        verdict = self._fire("nan", True, ctx, f"{what} is NaN/inf at epoch {ctx.epoch}", values)
        if verdict is not None and verdict.decision == "stop":
            verdict.immediate = True
        return verdict


@register_hook
class OscillationFlag(_Flag):
    """Val mAP50 or val loss going up and down by a large relative amount (LR too high, batch too small)."""

    name = "oscillation"

    def __init__(
        self,
        metrics: Sequence[RecordKey] = OSCILLATION_METRICS,
        window: MetricWindow = OSCILLATION_WINDOW,
        min_sign_change_ratio: SignChangeRatio = MIN_SIGN_CHANGE_RATIO,
        min_rel_amplitude: RelAmplitude = MIN_REL_AMPLITUDE,
        action: Action = FLAG_ACTION,
    ) -> None:
        super().__init__(action)
        self.metrics = list(metrics)
        self.window = window
        self.min_sign_change_ratio = min_sign_change_ratio
        self.min_rel_amplitude = min_rel_amplitude

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> list[Verdict]:
        if not is_validated(record):
            return []
        out = []
        for key in self.metrics:
            points = _points(ctx.history, key)[-self.window :]
            if len(points) < self.window:
                continue
            values = [v for _, (v,) in points]
            ratio, amp = oscillation(values)
            hit = ratio >= self.min_sign_change_ratio and amp >= self.min_rel_amplitude
            reason = (
                f"{key} oscillates over epochs {points[0][0]}-{points[-1][0]}: sign-change ratio "
                f"{ratio:.2f} >= {self.min_sign_change_ratio}, relative amplitude {amp:.3f} "
                f">= {self.min_rel_amplitude}"
            )
            values_out = {
                "metric": key,
                "sign_change_ratio": ratio,
                "rel_amplitude": amp,
                "window": self.window,
            }
            verdict = self._fire(key, hit, ctx, reason, values_out)
            if verdict:
                out.append(verdict)
        return out


@register_hook
class PlateauFlag(_Flag):
    """No new best of ``metric`` (by more than ``min_delta``) for ``patience`` epochs; for a loss
    (``*_loss``) the best is the lowest value."""

    name = "plateau"

    def __init__(
        self,
        metric: RecordKey = PLATEAU_METRIC,
        patience: Patience = PLATEAU_PATIENCE,
        min_delta: MinDelta = PLATEAU_MIN_DELTA,
        action: Action = FLAG_ACTION,
    ) -> None:
        super().__init__(action)
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        if not is_validated(record):
            return None
        points = _points(ctx.history, self.metric)
        if len(points) <= self.patience:
            return None
        values = [v for _, (v,) in points]
        lower_is_better = self.metric.endswith("_loss")
        stale = epochs_since_best(  # in validations
            [-v for v in values] if lower_is_better else values, self.min_delta
        )
        best_epoch, best = points[len(points) - 1 - stale][0], values[len(values) - 1 - stale]
        reason = (
            f"{self.metric} has not improved for {stale} validations since epoch {best_epoch} "
            f"(best {best:.4f}, patience {self.patience})"
        )
        values_out = {
            "metric": self.metric,
            "epochs_since_best": points[-1][0] - best_epoch,
            "validations_since_best": stale,
            "best": best,
            "best_epoch": best_epoch,
            "current": values[-1],
        }
        return self._fire("plateau", stale >= self.patience, ctx, reason, values_out)


@register_hook
class OverfitFlag(_Flag):
    """Train loss trending down while val loss trends up over ``window`` epochs."""

    name = "overfitting"

    def __init__(
        self,
        window: MetricWindow = OVERFIT_WINDOW,
        min_val_rise: MinValRise = MIN_VAL_RISE,
        action: Action = FLAG_ACTION,
    ) -> None:
        super().__init__(action)
        self.window = window
        self.min_val_rise = min_val_rise

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        if not is_validated(record):
            return None
        points = _points(ctx.history, "train_loss", "val_loss")[-self.window :]  # both from the same epochs
        if len(points) < self.window:
            return None
        train, val = [t for _, (t, _) in points], [v for _, (_, v) in points]
        train_slope, val_slope = slope(train), slope(val)
        level = float(np.mean(np.abs(val))) or 1.0
        val_rise = val_slope * (self.window - 1) / level
        hit = train_slope < 0 and val_rise >= self.min_val_rise
        reason = (
            f"over epochs {points[0][0]}-{points[-1][0]} train loss falls "
            f"({train_slope:+.4f}/validation) "
            f"while val loss rises {val_rise:+.1%} (>= {self.min_val_rise:.1%})"
        )
        values_out = {"train_loss_slope": train_slope, "val_loss_slope": val_slope, "val_rel_rise": val_rise}
        return self._fire("overfitting", hit, ctx, reason, values_out)


@register_hook
class LoaderStarvedFlag(_Flag):
    """The training loop waiting for its data loader: the median ``loader_wait_frac`` of the last ``window``
    epochs is at least ``max_wait_frac``.

    Every epoch is measured, validated or not. The first epoch of each training attempt (after
    ``ctx.start_epoch``) is left out: its loader workers start then. It fires at most once per attempt: a
    starved loader is a property of the set-up, and the epochs right after a validation look fed (the workers
    filled their queues meanwhile), which would otherwise clear and re-fire it every few epochs. Each
    ``before_train`` re-arms it: a resume (a new process, perhaps with more workers), and also a CUDA
    out-of-memory retry in the same process (a halved batch), which may so warn once more. Records without
    ``loader_wait_frac`` (epochs read back from ``results.csv`` on a resume, a retry or a replay) are not
    judged. ``advice`` (what to change in the job) ends the message.

    Example:
        >>> from pathlib import Path
        >>> flag = LoaderStarvedFlag(window=2, max_wait_frac=0.25)
        >>> ctx = TrainContext(run_dir=Path("."), epochs=9, epoch=3)
        >>> ctx.history = [{"epoch": e, "loader_wait_frac": w} for e, w in [(1, 0.9), (2, 0.4), (3, 0.5)]]
        >>> flag.after_fit_epoch(ctx, ctx.history[-1]).values["median_wait_frac"]
        0.45
    """

    name = "loader_starved"

    def __init__(
        self,
        window: LoaderWindow = LOADER_WINDOW,
        max_wait_frac: WaitFraction = MAX_WAIT_FRAC,
        advice: str = "",
        action: Action = FLAG_ACTION,
    ) -> None:
        super().__init__(action)
        self.window = window
        self.max_wait_frac = max_wait_frac
        self.advice = advice

    def before_train(self, ctx: TrainContext) -> None:
        self.active.pop("loader_starved", None)

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        if self.active.get("loader_starved"):
            return None
        waits = [(e, v) for e, (v,) in _points(ctx.history, "loader_wait_frac") if e > ctx.start_epoch + 1]
        if len(waits) < self.window:
            return None
        waits = waits[-self.window :]
        median = float(np.median([v for _, v in waits]))
        reason = (
            f"the training loop waited for its data loader {median:.0%} of the time over epochs "
            f"{waits[0][0]}-{waits[-1][0]} (median, threshold {self.max_wait_frac:.0%}): the model idles "
            "meanwhile" + (f"; {self.advice}" if self.advice else "")
        )
        values = {"median_wait_frac": median, "window": self.window, "max_wait_frac": self.max_wait_frac}
        return self._fire("loader_starved", median >= self.max_wait_frac, ctx, reason, values)
