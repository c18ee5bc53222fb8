"""The seed plan's decision point: at epoch K look at val mAP50; continue, continue with a warning, or stop.

Seed: "Decision point at Epoch 100: > 0.40 continue to 200; 0.30-0.40 continue, may reach 0.45+; < 0.30 STOP,
proceed to Phase 2 (add data)". ``decide`` is the pure rule; the hook applies it once, at the decision epoch.

Example:
    >>> decide(0.35, continue_above=0.40, stop_below=0.30)[0]
    'warn'
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from xraydet.config import NotBool
from xraydet.training.history import METRIC_KEYS, RecordKey, is_validated
from xraydet.training.hooks.base import Decision, HookBase, TrainContext, Verdict, register_hook


def decide(value: float, continue_above: float, stop_below: float) -> tuple[Decision, str]:
    """Map a metric value to a decision: ``>= continue_above`` continue, ``< stop_below`` stop, else warn.

    A non-finite value (NaN) stops: a run that cannot even be measured is not worth continuing.
    """
    if value != value or value in (float("inf"), float("-inf")):
        return "stop", f"value is {value}: the run cannot be measured"
    if value >= continue_above:
        return "continue", f"{value:.4f} >= {continue_above}: on track"
    if value < stop_below:
        return "stop", f"{value:.4f} < {stop_below}: stop and add data (seed Phase 2)"
    return "warn", f"{stop_below} <= {value:.4f} < {continue_above}: continue, may still reach the target"


def check_gate_metric(metric: str) -> str:
    """``metric`` if the gate can judge it (higher is better: a headline metric, not a loss), else ValueError.

    The gate continues above one threshold and stops below the other: on a loss it would stop the runs that
    learn and keep the ones that do not.
    """
    if metric not in METRIC_KEYS:
        raise ValueError(
            f"'{metric}' is not a metric where higher is better; the gate continues at or above "
            f"continue_above and stops below stop_below, so use one of {', '.join(METRIC_KEYS)}"
        )
    return metric


def check_gate_thresholds(stop_below: float, continue_above: float) -> None:
    """ValueError if ``stop_below`` exceeds ``continue_above`` (the warn band between them inverted)."""
    if stop_below > continue_above:
        raise ValueError(f"stop_below ({stop_below}) must not exceed continue_above ({continue_above})")


# The gate's parameters, typed once with their ranges, and their defaults: the one source of both for the
# hook's constructor (so for an extra ``decision_gate`` in a job's ``hooks:``) and for the job's ``gate``
# settings (:mod:`xraydet.training.job`).
OnStop = Literal["stop", "warn"]
DecisionEpoch = Annotated[int, NotBool, Field(ge=1, description="1-based epoch of the decision")]
# the gate's metrics (mAP, precision, recall) are fractions: a threshold outside 0-1 (or NaN) would make the
# gate always stop, or never continue
GateThreshold = Annotated[
    float, NotBool, Field(ge=0, le=1, description="a fraction, as the gate's metrics are")
]
GateMetric = Annotated[RecordKey, AfterValidator(check_gate_metric)]
DECISION_EPOCH = 100  # the seed's epoch 100 of 200
CONTINUE_ABOVE = 0.40
STOP_BELOW = 0.30
GATE_METRIC = "map50"
ON_STOP: OnStop = "stop"


def scaled_decision_epoch(epochs: int) -> int:
    """The seed's decision epoch (100 of 200) for a run of ``epochs``: 100 from 200 epochs on, else half.

    Example:
        >>> scaled_decision_epoch(300), scaled_decision_epoch(7), scaled_decision_epoch(1)
        (100, 4, 1)
    """
    return DECISION_EPOCH if epochs >= 2 * DECISION_EPOCH else max(1, math.ceil(epochs / 2))


@register_hook
class DecisionGate(HookBase):
    """Fires once, at ``decision_epoch`` (1-based), on ``metric`` of that epoch's validation.

    ``decision_epoch=None``: :func:`scaled_decision_epoch` of the epochs the loop plans (``ctx.epochs``),
    which Ultralytics re-plans after every epoch to fit a ``time`` budget: the gate judges the first validated
    epoch that reaches the decision epoch of the plan at its end; its verdict names that epoch and plan. When
    the run ends before the gate judged, :meth:`unreached` says so.
    """

    name = "decision_gate"

    def __init__(
        self,
        decision_epoch: DecisionEpoch | None = DECISION_EPOCH,
        continue_above: GateThreshold = CONTINUE_ABOVE,
        stop_below: GateThreshold = STOP_BELOW,
        metric: GateMetric = GATE_METRIC,
        on_stop: OnStop = ON_STOP,
    ) -> None:
        check_gate_thresholds(stop_below, continue_above)  # as gate.stop_below / gate.continue_above in a job
        self.decision_epoch = decision_epoch
        self.continue_above = continue_above
        self.stop_below = stop_below
        self.metric = metric
        self.on_stop = on_stop
        self.verdict: Verdict | None = None

    def epoch_for(self, epochs: int) -> int:
        """The decision epoch in a run planned for ``epochs``."""
        return self.decision_epoch if self.decision_epoch is not None else scaled_decision_epoch(epochs)

    def needs_validation(self, ctx: TrainContext) -> bool:
        return self.verdict is None and ctx.epoch >= self.epoch_for(ctx.epochs)

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        target = self.epoch_for(ctx.epochs)
        if self.verdict is not None or record.get("epoch", 0) < target:
            return None
        if not is_validated(record):  # judged at the first validated epoch from the decision epoch on
            return None
        if self.metric not in record:
            raise KeyError(
                f"decision gate: metric '{self.metric}' not in the epoch record ({sorted(record)})"
            )
        value = float(record[self.metric])
        decision, why = decide(value, self.continue_above, self.stop_below)
        if decision == "stop" and self.on_stop == "warn":
            decision, why = "warn", why + " (on_stop=warn: continuing)"
        self.verdict = Verdict(
            hook=self.name,
            epoch=int(record["epoch"]),
            decision=decision,
            reason=f"{self.metric} at epoch {record['epoch']}: {why}",
            values={
                self.metric: value,
                "decision_epoch": target,
                "epochs_planned": ctx.epochs,
                "continue_above": self.continue_above,
                "stop_below": self.stop_below,
            },
        )
        return self.verdict

    def unreached(self, last_epoch: int, epochs: int) -> Verdict | None:
        """A warning if the run ended at ``last_epoch`` (``epochs`` planned last) before the gate judged.

        A ``time`` budget (Ultralytics re-plans ``epochs`` to fit it), a stop, a timeout or early stopping can
        end a run before its decision epoch; without this the gate would stay silent. Not kept as the gate's
        verdict: a resumed or extended run that reaches the decision epoch is still judged.
        """
        if self.verdict is not None:
            return None
        target = self.epoch_for(epochs)
        if last_epoch < target:
            why = f"the run ended at epoch {last_epoch} ({epochs} planned), before decision epoch {target}"
        else:
            why = f"no validated epoch from the decision epoch {target} to the run's end at {last_epoch}"
        return Verdict(
            hook=self.name,
            epoch=last_epoch,
            decision="warn",
            reason=f"{self.metric} never judged: {why}",
            values={
                "decision_epoch": target,
                "last_epoch": last_epoch,
                "epochs_planned": epochs,
                "judged": False,
            },
        )

    def state_dict(self) -> dict[str, Any]:
        return {"verdict": None if self.verdict is None else self.verdict.model_dump()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raw = state.get("verdict")
        self.verdict = None if raw is None else Verdict.model_validate(raw)
