"""The promotion decision as pure functions, on hand-made report-like inputs whose answers are known."""

from __future__ import annotations

import pytest

from xraydet.registry.promotion import (
    ComparisonPolicy,
    ComparisonRule,
    compare_metric,
    compare_reports,
    decide,
    metric_value,
    pop_history,
    push_history,
    same_evaluation_problems,
)
from xraydet.registry.refs import ModelSpec, parse_ref
from xraydet.registry.store import RegistryError, validate_name


def report(map50=0.6, tdr=0.8, far=0.1, **meta):
    screening = {"threat_detection_rate": tdr, "false_alarm_rate": far}
    return {"box": {"map50": map50}, "screening": screening, **meta}


PASS_GATE = {"passed": True, "criteria": [
    {"name": "mAP50", "value": 0.6, "limit": 0.5, "op": ">", "passed": True},
]}
FAIL_GATE = {"passed": False, "criteria": [
    {"name": "mAP50", "value": 0.31, "limit": 0.5, "op": ">", "passed": False},
    {"name": "false-alarm rate", "value": 0.1, "limit": 0.2, "op": "<", "passed": True},
]}


@pytest.mark.parametrize(
    ("metric", "candidate", "champion", "tolerance", "passed"),
    [
        ("map50", 0.600, 0.600, 0.005, True),       # equal
        ("map50", 0.596, 0.600, 0.005, True),       # lower, within tolerance
        ("map50", 0.595, 0.600, 0.005, True),       # exactly at the tolerance
        ("map50", 0.594, 0.600, 0.005, False),      # beyond it
        ("map50", 0.594, 0.600, 0.01, True),        # a wider tolerance
        ("threat_detection_rate", 0.9, 0.5, 0.0, True),
        ("threat_detection_rate", 0.5, 0.9, 0.0, False),
        ("false_alarm_rate", 0.104, 0.100, 0.005, True),   # lower is better: higher within tolerance
        ("false_alarm_rate", 0.110, 0.100, 0.005, False),
        ("false_alarm_rate", 0.0, 1.0, 0.0, True),
        ("false_alarm_rate", None, None, 0.005, True),      # measured by neither: nothing to compare
        ("false_alarm_rate", 0.2, None, 0.005, True),       # champion lacks it
        ("false_alarm_rate", None, 0.1, 0.005, False),      # candidate lacks what the champion has
    ],
)
def test_compare_metric(metric, candidate, champion, tolerance, passed):
    result = compare_metric(ComparisonRule(metric=metric, tolerance=tolerance), candidate, champion)
    assert result.passed is passed
    assert result.higher_is_better is (metric != "false_alarm_rate")
    assert metric in result.detail


def test_failed_comparison_explains_with_numbers():
    detail = compare_metric(ComparisonRule(metric="map50"), 0.41, 0.62).detail
    assert "0.4100" in detail and "0.6200" in detail and "0.2100" in detail and "lower" in detail


def test_compare_reports_uses_policy_rules():
    cand, champ = report(map50=0.5, tdr=0.7, far=0.3), report(map50=0.6, tdr=0.8, far=0.1)
    default = compare_reports(cand, champ)
    assert [c.metric for c in default] == ["map50", "threat_detection_rate", "false_alarm_rate"]
    assert not any(c.passed for c in default)
    loose = compare_reports(cand, champ, ComparisonPolicy.uniform(0.25))
    assert all(c.passed for c in loose)
    far_only = ComparisonPolicy(rules=[ComparisonRule(metric="false_alarm_rate")])
    only_far = compare_reports(cand, champ, far_only)
    assert [c.metric for c in only_far] == ["false_alarm_rate"]


def test_unknown_metric_rule_lists_valid_names():
    with pytest.raises(ValueError, match="map50"):
        ComparisonRule(metric="mAP")


def test_metric_value_reads_objects_and_dicts():
    class Box:
        map50 = 0.7

    class Report:
        box = Box()
        screening = None

    assert metric_value(Report(), "map50") == 0.7
    assert metric_value(Report(), "false_alarm_rate") is None
    assert metric_value(report(far=float("nan")), "false_alarm_rate") is None


def test_same_evaluation_problems():
    a = report(dataset="d.yaml", n_images=32, conf=0.25, seed=0)
    assert same_evaluation_problems(a, dict(a)) == []
    problems = same_evaluation_problems(a, report(dataset="d.yaml", n_images=30, conf=0.25, seed=0))
    assert len(problems) == 1 and "n_images" in problems[0]


def test_no_champion_gate_alone_decides():
    d = decide("xray", "1", PASS_GATE)
    assert (d.decision, d.promoted, d.champion_version) == ("promoted", True, None)
    assert d.gate_criteria[0].name == "mAP50"


def test_failed_gate_is_refused_even_when_forced():
    d = decide("xray", "2", FAIL_GATE, champion_version="1", force_reason="hotfix")
    assert (d.decision, d.promoted) == ("refused", False)
    assert any("mAP50" in r and "0.3100" in r for r in d.reasons)
    assert any("force does not override" in r for r in d.reasons)


def test_not_worse_candidate_is_promoted():
    comps = compare_reports(report(map50=0.61), report(map50=0.60))
    d = decide("xray", "2", PASS_GATE, champion_version="1", comparisons=comps)
    assert (d.decision, d.promoted) == ("promoted", True)


def test_worse_candidate_is_refused_with_reasons():
    comps = compare_reports(report(far=0.3), report(far=0.1))
    d = decide("xray", "2", PASS_GATE, champion_version="1", comparisons=comps)
    assert (d.decision, d.promoted) == ("refused", False)
    assert len(d.reasons) == 1 and "false_alarm_rate" in d.reasons[0] and "champion v1" in d.reasons[0]


def test_force_overrides_a_worse_comparison_and_keeps_the_reason():
    comps = compare_reports(report(far=0.3), report(far=0.1))
    d = decide("xray", "2", PASS_GATE, champion_version="1", comparisons=comps,
               force_reason="  new scanner  ")
    assert (d.decision, d.promoted, d.force_reason) == ("forced", True, "new scanner")
    assert d.reasons[0] == "forced: new scanner"


def test_incomparable_evaluations_refuse():
    d = decide("xray", "2", PASS_GATE, champion_version="1", evaluation_problems=["evaluation sets differ"])
    assert d.decision == "refused"


def test_current_champion_is_unchanged():
    d = decide("xray", "3", None, champion_version="3")
    assert (d.decision, d.promoted, d.gate_passed) == ("unchanged", False, None)


def test_history_push_and_pop_walk_back():
    history = push_history(push_history([], None), "1")
    history = push_history(history, "2")
    assert history == ["1", "2"]
    previous, history = pop_history(history)
    assert (previous, history) == ("2", ["1"])
    previous, history = pop_history(history)
    assert (previous, history) == ("1", [])
    assert pop_history(history) == (None, [])


@pytest.mark.parametrize(
    ("ref", "spec"),
    [
        ("xray", ModelSpec("xray", "champion", None)),
        ("xray@champion", ModelSpec("xray", "champion", None)),
        ("xray@staging", ModelSpec("xray", "staging", None)),
        ("xray/3", ModelSpec("xray", None, "3")),
        ("xray/latest", ModelSpec("xray", None, "latest")),
        ("models:/xray@champion", ModelSpec("xray", "champion", None)),
        ("models:/xray-v8.n_1/12", ModelSpec("xray-v8.n_1", None, "12")),
    ],
)
def test_parse_ref(ref, spec):
    assert parse_ref(ref) == spec


@pytest.mark.parametrize("ref", ["", "xray/", "xray@", "xray/three", "a/b/c", "models:/", "@champion", "x y"])
def test_parse_ref_rejects_bad_references(ref):
    with pytest.raises(RegistryError, match="NAME@ALIAS"):
        parse_ref(ref)


@pytest.mark.parametrize("name", ["", "a/b", "a@b", "-x", "a b", "x" * 200])
def test_validate_name_rejects(name):
    with pytest.raises(RegistryError, match="invalid model name"):
        validate_name(name)
