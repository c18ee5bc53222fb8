"""Conditions and transitions: hand-made outcomes whose answers are known."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from xraydet.plan.transitions import (
    MISSING,
    Compare,
    Condition,
    Transition,
    condition_text,
    decide,
    evaluate_condition,
    lookup,
)

CONDITION = TypeAdapter(Condition)
OUTCOME = {
    "status": "stopped",
    "final": {"map50": 0.31, "recall": None},
    "decision": "stop",
    "red_flags": 2,
    "verdicts": {"plateau": "warn"},
    "failed": ["mAP50", "latency p95 (ms)"],
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"metric": "final.map50", "op": "<", "value": 0.40}, True),
        ({"metric": "final.map50", "op": "<", "value": 0.31}, False),
        ({"metric": "final.map50", "op": "<=", "value": 0.31}, True),
        ({"metric": "final.map50", "op": ">", "value": 0.30}, True),
        ({"metric": "final.map50", "op": ">=", "value": 0.40}, False),
        ({"metric": "status", "op": "==", "value": "stopped"}, True),
        ({"metric": "status", "op": "!=", "value": "stopped"}, False),
        ({"metric": "status", "op": "in", "value": ["stopped", "timed_out"]}, True),
        ({"metric": "status", "op": "not in", "value": ["stopped", "timed_out"]}, False),
        ({"metric": "red_flags", "op": ">", "value": 0}, True),
        ({"metric": "verdicts.plateau", "op": "==", "value": "warn"}, True),
        ({"metric": "failed.1", "op": "==", "value": "latency p95 (ms)"}, True),
        # absent or null values satisfy no comparison, but can be tested for explicitly
        ({"metric": "final.map50_95", "op": "<", "value": 0.4}, False),
        ({"metric": "final.map50_95", "op": ">=", "value": 0.4}, False),
        ({"metric": "final.recall", "op": "<", "value": 0.4}, False),
        ({"metric": "final.map50_95", "op": "missing"}, True),
        ({"metric": "final.recall", "op": "missing"}, True),
        ({"metric": "final.map50", "op": "exists"}, True),
        # a word compared with a number is simply false, never an exception
        ({"metric": "status", "op": "<", "value": 0.4}, False),
        (
            {
                "all": [
                    {"metric": "status", "op": "==", "value": "stopped"},
                    {"metric": "final.map50", "op": "<", "value": 0.3},
                ]
            },
            False,
        ),
        (
            {
                "any": [
                    {"metric": "status", "op": "==", "value": "stopped"},
                    {"metric": "final.map50", "op": "<", "value": 0.3},
                ]
            },
            True,
        ),
        ({"not": {"metric": "decision", "op": "==", "value": "stop"}}, False),
        (
            {
                "not": {
                    "any": [
                        {"metric": "decision", "op": "==", "value": "continue"},
                        {"metric": "red_flags", "op": "==", "value": 0},
                    ]
                }
            },
            True,
        ),
    ],
)
def test_conditions(raw: dict[str, Any], expected: bool) -> None:
    assert evaluate_condition(CONDITION.validate_python(raw), OUTCOME, {}).holds is expected


def test_nan_never_satisfies_a_comparison() -> None:
    for op in ("<", ">", ">=", "<=", "=="):
        cond = Compare(metric="v", op=op, value=0.5)
        assert not evaluate_condition(cond, {"v": float("nan")}, {}).holds


def test_reads_record_every_number_including_other_steps() -> None:
    cond = CONDITION.validate_python(
        {"metric": "final.map50", "op": ">", "value": {"step": "phase1", "metric": "final.map50"}}
    )
    check = evaluate_condition(cond, {"final": {"map50": 0.45}}, {"phase1": {"final": {"map50": 0.38}}})
    assert check.holds
    assert check.reads == {"final.map50": 0.45, "phase1.final.map50": 0.38}
    assert condition_text(cond) == "final.map50 > phase1.final.map50"
    missing = evaluate_condition(cond, {"final": {"map50": 0.45}}, {})
    assert not missing.holds and missing.reads["phase1.final.map50"] == "missing"


def test_lookup() -> None:
    assert lookup(OUTCOME, "final.map50") == 0.31
    assert lookup(OUTCOME, "failed.-1") == "latency p95 (ms)"
    assert lookup(OUTCOME, "failed.7") is MISSING
    assert lookup(OUTCOME, "status.deeper") is MISSING


SEED_RULES = TypeAdapter(list[Transition]).validate_python(
    [
        {
            "when": {"metric": "status", "op": "==", "value": "stopped"},
            "goto": "phase2",
            "note": "stopped at decision",
        },
        {"when": {"metric": "final.map50", "op": "<", "value": 0.40}, "goto": "phase2"},
        {"goto": "evaluate", "note": "good enough"},
    ]
)


@pytest.mark.parametrize(
    ("outcome", "goto", "rule"),
    [
        ({"status": "stopped", "final": {"map50": 0.12}}, "phase2", 0),
        ({"status": "completed", "final": {"map50": 0.35}}, "phase2", 1),
        ({"status": "completed", "final": {"map50": 0.40}}, "evaluate", 2),
        ({"status": "failed"}, "evaluate", 2),
    ],
)
def test_first_matching_rule_wins(outcome: dict[str, Any], goto: str, rule: int) -> None:
    decision = decide(SEED_RULES, outcome, {}, "next-step")
    assert (decision.goto, decision.rule) == (goto, rule)
    # every condition checked up to the winning rule is kept, with its numbers
    assert len(decision.checked) == min(rule + 1, 2)


def test_no_rule_matches_falls_through_to_next_step() -> None:
    rules = SEED_RULES[:2]
    decision = decide(rules, {"status": "completed", "final": {"map50": 0.5}}, {}, "phase2")
    assert decision.goto == "phase2" and decision.rule is None
    assert decision.reads == {"status": "completed", "final.map50": 0.5}
    assert decide([], {}, {}, "end").goto == "end"


@pytest.mark.parametrize(
    "raw",
    [
        {"metric": "final.map50", "op": "~", "value": 1},
        {"metric": "final.map50", "op": "<", "value": 1, "extra": 2},
        {"all": []},
        {"any": "x"},
        7,
    ],
)
def test_bad_conditions_are_rejected(raw: Any) -> None:
    with pytest.raises(ValidationError):
        CONDITION.validate_python(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # these validated before and were never true
        ({"metric": "final.map50", "op": "<"}, r"op '<' needs a value"),
        ({"metric": "final.map50"}, r"op '>=' needs a value"),
        ({"metric": "status", "op": "=="}, r"op '==' needs a value"),
        ({"metric": "final.map50", "op": ">=", "value": "high"}, r"op '>=' compares numbers.*'high'"),
        ({"metric": "final.map50", "op": "<", "value": [0.4]}, r"op '<' compares numbers"),
        ({"metric": "final.map50", "op": "<", "value": True}, r"op '<' compares numbers"),
        ({"metric": "final.map50", "op": "<", "value": "nan"}, r"op '<' compares numbers.*'nan'"),
    ],
)
def test_a_value_must_fit_its_op(raw: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CONDITION.validate_python(raw)


def test_in_with_one_value_means_a_list_of_one() -> None:
    cond = CONDITION.validate_python({"metric": "status", "op": "in", "value": "stopped"})
    assert isinstance(cond, Compare) and cond.value == ["stopped"]
    assert evaluate_condition(cond, {"status": "stopped"}, {}).holds is True
    negated = CONDITION.validate_python({"metric": "status", "op": "not in", "value": "stopped"})
    assert evaluate_condition(negated, {"status": "completed"}, {}).holds is True


def test_numeric_text_is_a_number_for_order_ops() -> None:
    """YAML 1.1 reads ``5e-2`` as text; compared with a number it meant a number."""
    cond = CONDITION.validate_python({"metric": "final.map50", "op": "<", "value": "5e-2"})
    assert isinstance(cond, Compare) and cond.value == 0.05
    assert evaluate_condition(cond, {"final": {"map50": 0.01}}, {}).holds is True
    ref = {"metric": "final.map50", "op": ">", "value": {"step": "p1", "metric": "final.map50"}}
    assert evaluate_condition(
        CONDITION.validate_python(ref), OUTCOME, {"p1": {"final": {"map50": 0.3}}}
    ).holds
    for raw in ({"metric": "final.map50", "op": "exists"}, {"metric": "status", "op": "==", "value": "5e-2"}):
        CONDITION.validate_python(raw)  # no value needed / text stays text for ==
