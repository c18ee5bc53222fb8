"""The seed plan's decision point: at epoch K look at val mAP50; continue, continue with a warning, or stop.

Seed: "Decision point at Epoch 100: > 0.40 continue to 200; 0.30-0.40 continue, may reach 0.45+; < 0.30 STOP,
proceed to Phase 2 (add data)". ``decide`` is the pure rule; the hook applies it once, at the decision epoch.

Example:
    >>> decide(0.35, continue_above=0.40, stop_below=0.30)[0]
    'warn'
"""

from __future__ import annotations

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


@register_hook
class DecisionGate(HookBase):
    """Fires once, at ``decision_epoch`` (1-based), on ``metric`` of that epoch's validation."""

    name = "decision_gate"

    def __init__(
        self,
        decision_epoch: DecisionEpoch = DECISION_EPOCH,
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

    def needs_validation(self, ctx: TrainContext) -> bool:
        return self.verdict is None and ctx.epoch >= self.decision_epoch

    def after_fit_epoch(self, ctx: TrainContext, record: dict[str, Any]) -> Verdict | None:
        if self.verdict is not None or record.get("epoch", 0) < self.decision_epoch:
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
                "decision_epoch": self.decision_epoch,
                "continue_above": self.continue_above,
                "stop_below": self.stop_below,
            },
        )
        return self.verdict

    def state_dict(self) -> dict[str, Any]:
        return {"verdict": None if self.verdict is None else self.verdict.model_dump()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raw = state.get("verdict")
        self.verdict = None if raw is None else Verdict.model_validate(raw)
