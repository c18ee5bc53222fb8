"""Whether a candidate may replace the champion: pure decisions on evaluation reports and gate results.

Nothing here touches MLflow or the disk. :func:`xraydet.registry.lifecycle.promote` evaluates the candidate
and the champion on the same images, then asks :func:`decide` what to do.

The rules:

1. The candidate must pass the readiness gate. ``force`` never overrides a failed gate.
2. With no champion yet, the gate alone decides.
3. Otherwise the candidate must be *not worse* than the champion on every compared metric: a metric where
   higher is better (mAP50, threat detection rate) may not be lower than the champion's by more than its
   tolerance, and one where lower is better (false-alarm rate) may not be higher by more than its tolerance.
4. A failed comparison can be overridden by a forced promotion that gives a reason; the reason is recorded.

Reports are read by duck typing (attributes or dict keys), so an
:class:`xraydet.evaluation.report.EvalReport`, its ``model_dump()`` or a hand-made dict all work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

#: Where each comparable metric lives in an EvalReport (section, field).
METRIC_PATHS: dict[str, tuple[str, str]] = {
    "map50": ("box", "map50"),
    "map50_95": ("box", "map50_95"),
    "precision": ("box", "precision"),
    "recall": ("box", "recall"),
    "threat_detection_rate": ("screening", "threat_detection_rate"),
    "threat_detection_rate_any": ("screening", "threat_detection_rate_any"),
    "false_alarm_rate": ("screening", "false_alarm_rate"),
    "accuracy": ("screening", "accuracy"),
}

#: Metrics for which a lower value is better.
LOWER_IS_BETTER = frozenset({"false_alarm_rate"})

Decision = Literal["promoted", "forced", "refused", "unchanged"]


class ComparisonRule(BaseModel):
    """One metric the candidate may not regress on, and by how much it may."""

    metric: str
    tolerance: float = Field(default=0.005, ge=0.0, le=1.0)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRIC_PATHS:
            raise ValueError(f"unknown metric {value!r}; choose one of {', '.join(METRIC_PATHS)}")
        return value

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER


def _default_rules() -> list[ComparisonRule]:
    return [ComparisonRule(metric=m) for m in ("map50", "threat_detection_rate", "false_alarm_rate")]


class ComparisonPolicy(BaseModel):
    """What "not worse than the champion" means. Defaults: mAP50, threat detection rate and false-alarm rate,
    each with a tolerance of 0.005.

    Example:
        >>> ComparisonPolicy.uniform(0.01).rules[0].tolerance
        0.01
    """

    rules: list[ComparisonRule] = Field(default_factory=_default_rules)

    @classmethod
    def uniform(cls, tolerance: float, metrics: Sequence[str] | None = None) -> ComparisonPolicy:
        """The given metrics (default: the three standard ones), all with the same tolerance."""
        names = list(metrics) if metrics else [r.metric for r in _default_rules()]
        return cls(rules=[ComparisonRule(metric=m, tolerance=tolerance) for m in names])


class Comparison(BaseModel):
    """The candidate against the champion on one metric."""

    metric: str
    candidate: float | None
    champion: float | None
    tolerance: float
    higher_is_better: bool
    passed: bool
    detail: str


class GateCriterion(BaseModel):
    """One line of a readiness-gate result, copied so the decision stands alone."""

    name: str
    value: Any = None
    limit: Any = None
    op: str = ""
    passed: bool
    skipped: bool = False
    detail: str = ""


class PromotionDecision(BaseModel):
    """What :func:`xraydet.registry.promote` decided, why, and with which numbers."""

    name: str
    version: str
    decision: Decision
    promoted: bool
    reasons: list[str]
    gate_passed: bool | None = None
    gate_criteria: list[GateCriterion] = Field(default_factory=list)
    champion_version: str | None = None
    comparisons: list[Comparison] = Field(default_factory=list)
    force_reason: str | None = None
    candidate_metrics: dict[str, float | None] = Field(default_factory=dict)
    champion_metrics: dict[str, float | None] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    decided_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def _field(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def metric_value(report: Any, metric: str) -> float | None:
    """Read one metric from an EvalReport-like object (``None`` when it was not measured).

    Example:
        >>> metric_value({"box": {"map50": 0.61}}, "map50")
        0.61
        >>> metric_value({"screening": {"false_alarm_rate": None}}, "false_alarm_rate") is None
        True
    """
    section, key = METRIC_PATHS[metric]
    return _as_float(_field(_field(report, section), key))


def report_metrics(report: Any, metrics: Sequence[str] = tuple(METRIC_PATHS)) -> dict[str, float | None]:
    """The named metrics of a report, ``None`` where not measured."""
    return {m: metric_value(report, m) for m in metrics}


def report_meta(report: Any, key: str) -> Any:
    """A meta field (``dataset``, ``n_images``, ``conf``...) at the top level or under ``meta``."""
    value = _field(report, key)
    return value if value is not None else _field(_field(report, "meta"), key)


def compare_metric(rule: ComparisonRule, candidate: float | None, champion: float | None) -> Comparison:
    """Is ``candidate`` not worse than ``champion`` on ``rule.metric`` within its tolerance?

    A metric the champion has but the candidate lacks fails (it cannot be shown not worse); one the champion
    lacks passes (nothing to compare against).

    Example:
        >>> compare_metric(ComparisonRule(metric="map50"), 0.600, 0.604).passed
        True
        >>> compare_metric(ComparisonRule(metric="false_alarm_rate"), 0.20, 0.10).passed
        False
    """
    common: dict[str, Any] = {"metric": rule.metric, "candidate": candidate, "champion": champion,
              "tolerance": rule.tolerance, "higher_is_better": rule.higher_is_better}
    if champion is None:
        return Comparison(**common, passed=True, detail=f"{rule.metric}: champion has no value, not compared")
    if candidate is None:
        detail = f"{rule.metric}: champion measured {champion:.4f}, the candidate has no value"
        return Comparison(**common, passed=False, detail=detail)
    delta = candidate - champion
    # A tiny epsilon keeps "exactly at the tolerance" from failing on float rounding.
    if rule.higher_is_better:
        passed = delta >= -rule.tolerance - 1e-9
        word = "lower"
    else:
        passed = delta <= rule.tolerance + 1e-9
        word = "higher"
    if passed:
        detail = f"{rule.metric}: {candidate:.4f} vs champion {champion:.4f} ({delta:+.4f}), within tolerance"
    else:
        detail = (f"{rule.metric}: {candidate:.4f} is {word} than the champion's {champion:.4f} by "
                  f"{abs(delta):.4f} (tolerance {rule.tolerance:g})")
    return Comparison(**common, passed=passed, detail=detail)


def compare_reports(
    candidate: Any, champion: Any, policy: ComparisonPolicy | None = None
) -> list[Comparison]:
    """Compare two reports of the same evaluation set on every rule of ``policy``."""
    policy = policy or ComparisonPolicy()
    return [compare_metric(r, metric_value(candidate, r.metric), metric_value(champion, r.metric))
            for r in policy.rules]


def same_evaluation_problems(candidate: Any, champion: Any) -> list[str]:
    """Why two reports are not from the same evaluation set (empty when they are, or when meta is absent)."""
    problems = []
    for key in ("dataset", "split", "n_images", "conf", "seed", "negatives", "tta"):
        a, b = report_meta(candidate, key), report_meta(champion, key)
        if a is not None and b is not None and a != b:
            problems.append(f"evaluation sets differ on {key}: candidate {a!r}, champion {b!r}")
    return problems


def gate_criteria(gate: Any) -> list[GateCriterion]:
    """Copy the criteria of a GateResult-like object."""
    out = []
    for c in _field(gate, "criteria") or []:
        out.append(GateCriterion(
            name=str(_field(c, "name")), value=_plain(_field(c, "value")),
            limit=_plain(_field(c, "limit")), op=str(_field(c, "op") or ""),
            passed=bool(_field(c, "passed")), skipped=bool(_field(c, "skipped")),
            detail=str(_field(c, "detail") or ""),
        ))
    return out


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _gate_reason(c: GateCriterion) -> str:
    text = f"gate: {c.name} failed"
    if c.value is not None and c.limit is not None:
        value = f"{c.value:.4f}" if isinstance(c.value, float) else str(c.value)
        text += f" ({value}, must be {c.op} {c.limit})".replace("  ", " ")
    return text + (f": {c.detail}" if c.detail else "")


def decide(
    name: str,
    version: str,
    gate: Any,
    *,
    champion_version: str | None = None,
    comparisons: Sequence[Comparison] = (),
    evaluation_problems: Sequence[str] = (),
    force_reason: str | None = None,
) -> PromotionDecision:
    """Turn a gate result and the comparisons with the champion into a decision.

    Args:
        name: registered model name.
        version: the candidate version.
        gate: a GateResult-like object (``.passed``, ``.criteria``); ``None`` only when the candidate is
            already the champion (nothing was evaluated).
        champion_version: the current champion, or ``None`` when there is none (the gate alone decides).
        comparisons: :func:`compare_reports` of the candidate against the champion.
        evaluation_problems: reasons the two evaluations are not comparable (refuses, like a regression).
        force_reason: promote despite failed comparisons, for this recorded reason. Never overrides the gate.

    Example:
        >>> gate = {"passed": True, "criteria": []}
        >>> decide("xray", "1", gate).decision
        'promoted'
    """
    criteria = gate_criteria(gate)
    gate_passed = None if gate is None else bool(_field(gate, "passed"))
    force_reason = force_reason.strip() if force_reason else None
    base: dict[str, Any] = {
        "name": name, "version": version, "gate_passed": gate_passed, "gate_criteria": criteria,
        "champion_version": champion_version, "comparisons": list(comparisons), "force_reason": force_reason,
    }
    if champion_version is not None and str(champion_version) == str(version):
        return PromotionDecision(**base, decision="unchanged", promoted=False,
                                 reasons=[f"version {version} is already the champion"])
    if not gate_passed:
        reasons = [_gate_reason(c) for c in criteria if not c.passed] or ["gate: failed"]
        if force_reason:
            reasons.append("force does not override a failed readiness gate")
        return PromotionDecision(**base, decision="refused", promoted=False, reasons=reasons)
    if champion_version is None:
        return PromotionDecision(**base, decision="promoted", promoted=True,
                                 reasons=["gate passed; no champion yet, so the gate alone decides"])
    failures = [*evaluation_problems, *(c.detail for c in comparisons if not c.passed)]
    if not failures:
        return PromotionDecision(**base, decision="promoted", promoted=True,
                                 reasons=[f"gate passed and not worse than champion v{champion_version}",
                                          *(c.detail for c in comparisons)])
    if force_reason:
        return PromotionDecision(**base, decision="forced", promoted=True,
                                 reasons=[f"forced: {force_reason}", *failures])
    return PromotionDecision(**base, decision="refused", promoted=False,
                             reasons=[f"worse than champion v{champion_version}: {f}" for f in failures])


def push_history(history: Sequence[str], old_champion: str | None) -> list[str]:
    """The champion history after a promotion replaced ``old_champion`` (oldest first)."""
    return [*history, str(old_champion)] if old_champion is not None else list(history)


def pop_history(history: Sequence[str]) -> tuple[str | None, list[str]]:
    """The version to roll back to and the history left after it.

    Example:
        >>> pop_history(["1", "2"])
        ('2', ['1'])
        >>> pop_history([])
        (None, [])
    """
    if not history:
        return None, []
    return str(history[-1]), list(history[:-1])
