"""The production readiness gate: the seed plan's deployment criteria, checked against a report and a review.

Default policy (the seed's "Production Readiness"): mAP50 > 0.50, seed accuracy > 60%, threat detection rate
> 70%, false-alarm rate < 20%, latency p95 < 200 ms, and at least 100 random predictions reviewed by a person
with an approval share (correct / reviewed) >= 0.9.

A criterion that was not measured FAILS with "not measured": e.g. a report without threat-free bags has no
false-alarm rate, and a missing review has no approval share. Setting a limit to ``null`` in a policy file
switches that criterion off explicitly; it is then listed as skipped, never as passed.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xraydet.config import NotBool, read_yaml_mapping
from xraydet.errors import ConfigError
from xraydet.evaluation.report import EvalReport, load_report, report_folder
from xraydet.evaluation.review.store import VerdictStore

Op = Literal[">", ">=", "<", "<="]
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
# A policy's limits; None switches one off, and a YAML `true` is refused rather than read as 1.
Limit = Annotated[float | None, NotBool]
Count = Annotated[int | None, NotBool]


class GatePolicy(BaseModel):
    """Limits a report must meet; ``None`` switches a criterion off (reported as skipped)."""

    model_config = ConfigDict(extra="forbid")

    # rates are fractions (0.5, not 50): a limit written as a percentage would fail every model
    min_map50: Limit = Field(default=0.50, ge=0, le=1)
    min_accuracy: Limit = Field(default=0.60, ge=0, le=1)
    min_threat_detection: Limit = Field(default=0.70, ge=0, le=1)
    max_false_alarm_rate: Limit = Field(default=0.20, ge=0, le=1)
    max_latency_p95_ms: Limit = Field(default=200.0, gt=0, allow_inf_nan=False)
    min_reviewed: Count = Field(default=100, ge=0)
    min_approval: Limit = Field(default=0.90, ge=0, le=1)


class Criterion(BaseModel):
    name: str
    value: float | None
    limit: float | None
    op: Op
    passed: bool
    skipped: bool = False
    detail: str = ""


class GateResult(BaseModel):
    passed: bool
    report: str
    criteria: list[Criterion]


def load_policy(path: str | Path) -> GatePolicy:
    """Read a policy YAML; an unknown key or a bad value is an error naming the file and key."""
    path = Path(path)
    raw = read_yaml_mapping(path, "policy", example="min_map50: 0.5")
    try:
        return GatePolicy.model_validate(raw)
    except ValidationError as err:
        valid = ", ".join(GatePolicy.model_fields)
        problems = []
        for e in err.errors():
            key = ".".join(map(str, e["loc"]))
            if e["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}' (valid keys: {valid})")
            else:
                problems.append(f"key '{key}': {e['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from err


def _criterion(name: str, value: float | None, limit: float | None, op: Op, detail: str = "") -> Criterion:
    if limit is None:
        return Criterion(
            name=name,
            value=value,
            limit=None,
            op=op,
            passed=True,
            skipped=True,
            detail="switched off by the policy",
        )
    if value is None:
        return Criterion(
            name=name, value=None, limit=limit, op=op, passed=False, detail=f"not measured. {detail}".strip()
        )
    return Criterion(
        name=name, value=value, limit=limit, op=op, passed=bool(_OPS[op](value, limit)), detail=detail
    )


def check_gate(
    report: EvalReport | str | Path, policy: GatePolicy | None = None, review_dir: str | Path | None = None
) -> GateResult:
    """Check every criterion of ``policy`` against ``report`` (or its folder) and the review verdicts.

    ``review_dir`` defaults to ``REPORT_DIR/review`` when ``report`` is a folder or the ``report.json`` in
    one. Verdicts recorded for another report (a different ``report_id``) are not counted.

    Example:
        >>> result = check_gate("reports/best")  # doctest: +SKIP
        >>> result.passed, [c.name for c in result.criteria if not c.passed]  # doctest: +SKIP
        (False, ['false-alarm rate'])
    """
    policy = policy or GatePolicy()
    label = "<in memory>"
    if not isinstance(report, EvalReport):
        label = str(report)
        if review_dir is None:
            review_dir = report_folder(report) / "review"
        report = load_report(report)
    s, lat = report.screening, report.latency
    review = _review_counts(report, review_dir)
    no_negatives = "no threat-free bags were evaluated: pass --negatives DIR to `xraydet eval`"
    criteria = [
        _criterion("mAP50", report.box.map50, policy.min_map50, ">"),
        _criterion(
            s.accuracy_label,
            s.accuracy,
            policy.min_accuracy,
            ">",
            "" if s.accuracy is not None else "no labelled images",
        ),
        _criterion(
            "threat detection rate",
            s.threat_detection_rate,
            policy.min_threat_detection,
            ">",
            f"{s.threats_found}/{s.n_threat_bags} threat bags" if s.n_threat_bags else "no threat bags",
        ),
        _criterion(
            "false-alarm rate",
            s.false_alarm_rate,
            policy.max_false_alarm_rate,
            "<",
            f"{s.false_alarms}/{s.n_threat_free_bags} threat-free bags"
            if s.n_threat_free_bags
            else no_negatives,
        ),
        _criterion(
            "latency p95 (ms)",
            lat.p95_ms,
            policy.max_latency_p95_ms,
            "<",
            f"{lat.backend} on {lat.device}" + (f", TTA {report.tta}" if report.tta != "off" else ""),
        ),
        _criterion("predictions reviewed", review["reviewed"], policy.min_reviewed, ">=", review["detail"]),
        _criterion("review approval share", review["approval"], policy.min_approval, ">=", review["detail"]),
    ]
    passed = all(c.passed for c in criteria)
    return GateResult(passed=passed, report=label, criteria=criteria)


def _review_counts(report: EvalReport, review_dir: str | Path | None) -> dict[str, Any]:
    if review_dir is None or not VerdictStore.exists(Path(review_dir)):
        return {
            "reviewed": None,
            "approval": None,
            "detail": "no review yet: run `xraydet review REPORT_DIR`",
        }
    store = VerdictStore.open(Path(review_dir))
    if store.report_id != report.report_id:
        return {
            "reviewed": None,
            "approval": None,
            "detail": f"the verdicts in {review_dir} belong to another report ({store.report_id})",
        }
    counts = store.counts()
    reviewed = counts["reviewed"]
    approval = counts["correct"] / reviewed if reviewed else None
    detail = f"{counts['correct']} correct, {counts['wrong']} wrong, {counts['missed_threat']} missed threat"
    return {"reviewed": float(reviewed), "approval": approval, "detail": detail}
