"""The readiness gate: policy files, each criterion on known values, review verdicts, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xraydet.errors import ConfigError
from xraydet.evaluation.gate import GatePolicy, check_gate, load_policy
from xraydet.evaluation.report import EvalReport, load_report
from xraydet.evaluation.review.store import VerdictStore

CRITERIA = [
    "mAP50",
    "seed accuracy (top-1 box class = first label)",
    "threat detection rate",
    "false-alarm rate",
    "latency p95 (ms)",
    "predictions reviewed",
    "review approval share",
]


def with_values(report: EvalReport, **changes: float | None) -> EvalReport:
    """A copy of ``report`` with screening/box/latency numbers replaced (keys like ``box__map50``)."""
    data = report.model_dump()
    for key, value in changes.items():
        section, field = key.split("__")
        data[section][field] = value
    return EvalReport.model_validate(data)


GOOD = {
    "box__map50": 0.62,
    "screening__accuracy": 0.71,
    "screening__threat_detection_rate": 0.8,
    "screening__false_alarm_rate": 0.1,
    "latency__p95_ms": 80.0,
}


def review(
    report: EvalReport, tmp_path: Path, correct: int, wrong: int = 0, missed: int = 0, rid: str = ""
) -> Path:
    store = VerdictStore.open_or_create(tmp_path / "review", rid or report.report_id)
    verdicts = ["correct"] * correct + ["wrong"] * wrong + ["missed_threat"] * missed
    for i, v in enumerate(verdicts):
        store.set(f"{i:06d}", v)
    return tmp_path / "review"


@pytest.fixture
def base(label_report_dir: Path) -> EvalReport:
    return load_report(label_report_dir)


def by_name(result):
    return {c.name: c for c in result.criteria}


def test_all_criteria_pass(base, tmp_path):
    result = check_gate(with_values(base, **GOOD), review_dir=review(base, tmp_path, 95, 4, 1))
    assert [c.name for c in result.criteria] == CRITERIA
    assert result.passed, [c for c in result.criteria if not c.passed]
    assert by_name(result)["review approval share"].value == pytest.approx(0.95)
    assert by_name(result)["predictions reviewed"].value == 100


@pytest.mark.parametrize(
    ("change", "criterion"),
    [
        ({"box__map50": 0.50}, "mAP50"),  # the seed says "> 0.50": exactly 0.50 fails
        ({"screening__accuracy": 0.6}, CRITERIA[1]),
        ({"screening__threat_detection_rate": 0.69}, "threat detection rate"),
        ({"screening__false_alarm_rate": 0.2}, "false-alarm rate"),
        ({"latency__p95_ms": 250.0}, "latency p95 (ms)"),
        # the seed's limits are strict: exactly at the limit fails
        ({"screening__threat_detection_rate": 0.70}, "threat detection rate"),
        ({"screening__accuracy": 0.60}, CRITERIA[1]),
        ({"latency__p95_ms": 200.0}, "latency p95 (ms)"),
    ],
)
def test_one_failing_criterion_fails_the_gate(base, tmp_path, change, criterion):
    result = check_gate(with_values(base, **{**GOOD, **change}), review_dir=review(base, tmp_path, 100))
    assert not result.passed
    assert [c.name for c in result.criteria if not c.passed] == [criterion]


def test_missing_false_alarm_rate_fails_as_not_measured(base, tmp_path):
    report = with_values(
        base, **{**GOOD, "screening__false_alarm_rate": None, "screening__n_threat_free_bags": 0}
    )
    c = by_name(check_gate(report, review_dir=review(base, tmp_path, 100)))["false-alarm rate"]
    assert not c.passed and c.value is None
    assert "not measured" in c.detail and "--negatives" in c.detail


@pytest.mark.parametrize(
    ("correct", "wrong", "missed", "reviewed_ok", "approval_ok"),
    [
        (90, 10, 0, True, True),  # 0.90 >= 0.90
        (89, 10, 1, True, False),  # 0.89
        (60, 0, 0, False, True),  # too few reviewed
    ],
)
def test_review_criteria(base, tmp_path, correct, wrong, missed, reviewed_ok, approval_ok):
    result = by_name(
        check_gate(with_values(base, **GOOD), review_dir=review(base, tmp_path, correct, wrong, missed))
    )
    gate = check_gate(with_values(base, **GOOD), review_dir=review(base, tmp_path, correct, wrong, missed))
    assert result["predictions reviewed"].passed is reviewed_ok
    assert result["review approval share"].passed is approval_ok
    assert gate.passed is (reviewed_ok and approval_ok)  # a failed review criterion fails the gate


def test_no_review_or_another_reports_review_fails(base, tmp_path):
    result = by_name(check_gate(with_values(base, **GOOD)))
    assert (
        not result["predictions reviewed"].passed
        and "xraydet review" in result["predictions reviewed"].detail
    )
    other = review(base, tmp_path, 100, rid="someotherreport")
    result = by_name(check_gate(with_values(base, **GOOD), review_dir=other))
    assert (
        not result["review approval share"].passed
        and "another report" in result["review approval share"].detail
    )


def test_policy_can_switch_a_criterion_off_explicitly(base, tmp_path):
    policy = GatePolicy(max_false_alarm_rate=None)
    report = with_values(base, **{**GOOD, "screening__false_alarm_rate": None})
    result = check_gate(report, policy, review_dir=review(base, tmp_path, 100))
    c = by_name(result)["false-alarm rate"]
    assert result.passed and c.skipped and c.limit is None


def test_load_policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("min_map50: 0.4\nmin_approval: 0.95\nmax_false_alarm_rate: null\n")
    policy = load_policy(path)
    assert (policy.min_map50, policy.min_approval, policy.max_false_alarm_rate) == (0.4, 0.95, None)
    assert policy.min_accuracy == 0.6  # untouched keys keep the seed's values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_map: 0.4\n", "unknown key 'min_map'"),
        ("min_map50: lots\n", "key 'min_map50'"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("min_map50: [\n", "not valid YAML"),
        ("min_map50: 50\n", "key 'min_map50'.*less than or equal to 1"),  # a percentage: no model could pass
        ("max_false_alarm_rate: -0.1\n", "key 'max_false_alarm_rate'"),
        ("max_latency_p95_ms: .inf\n", "key 'max_latency_p95_ms'"),
        ("min_reviewed: -5\n", "key 'min_reviewed'"),
    ],
)
def test_bad_policy_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_policy(path)
    assert str(path) in str(err.value)


def _app():
    from xraydet.cli.main import app

    return app


def test_cli_gate_exit_codes(label_report_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(_app(), ["gate", str(label_report_dir)])
    assert result.exit_code == 1, result.output
    for name in ("mAP50", "seed accuracy", "threat detection", "false-alarm rate", "latency p95", "reviewed"):
        assert name in result.output
    assert "FAIL" in result.output and "GATE FAILED" in result.output
    # the perfect label predictor passes everything but the review; review 3 items and lower the bar to 3
    review(load_report(label_report_dir), label_report_dir, 3)
    policy = tmp_path / "p.yaml"
    policy.write_text("min_reviewed: 3\n")
    result = runner.invoke(_app(), ["gate", str(label_report_dir), "--policy", str(policy), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["passed"] and len(body["criteria"]) == 7
    assert json.loads((label_report_dir / "gate.json").read_text())["passed"]


@pytest.mark.realdata
@pytest.mark.slow
def test_cli_gate_on_real_report(report_copy):
    result = CliRunner().invoke(_app(), ["gate", str(report_copy)], terminal_width=200)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    for name in (
        "mAP50",
        "seed accuracy",
        "threat detection rate",
        "false-alarm rate",
        "latency p95 (ms)",
        "predictions reviewed",
        "review approval share",
    ):
        row = next((ln for ln in lines if name in ln), None)
        assert row is not None, f"{name} missing from:\n{result.output}"
        assert "PASS" in row or "FAIL" in row
    gate = json.loads((report_copy / "gate.json").read_text())
    report = load_report(report_copy)
    assert gate["criteria"][0]["value"] == pytest.approx(report.box.map50)
    assert gate["criteria"][3]["value"] == pytest.approx(report.screening.false_alarm_rate)


@pytest.mark.parametrize("key", ["min_map50", "max_latency_p95_ms", "min_reviewed"])
def test_a_boolean_limit_is_refused_not_read_as_one(key, tmp_path):
    """``min_reviewed: yes`` in a policy file would otherwise ask for one reviewed prediction."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"{key}: yes\n")
    with pytest.raises(ConfigError, match=f"{key}.*expected a number, got the boolean true"):
        load_policy(policy)


def test_a_report_file_finds_the_review_beside_it(label_report_dir):
    """`load_report` takes the folder or its report.json: given the file, the review in its folder counts too,
    rather than the gate failing with 'no review yet' on a reviewed report."""
    review(load_report(label_report_dir), label_report_dir, 3)
    policy = GatePolicy(min_reviewed=3)
    from_file = by_name(check_gate(label_report_dir / "report.json", policy))
    assert from_file["predictions reviewed"].value == 3 and from_file["predictions reviewed"].passed
    assert from_file == by_name(check_gate(label_report_dir, policy))


def test_cli_gate_given_the_report_json_writes_gate_json_beside_it(label_report_dir, tmp_path):
    """`gate REPORT_DIR/report.json` judges the same report as `gate REPORT_DIR`, and records it in the same
    place: before, the file form wrote no gate.json at all."""
    review(load_report(label_report_dir), label_report_dir, 3)
    policy = tmp_path / "p.yaml"
    policy.write_text("min_reviewed: 3\n")
    (label_report_dir / "gate.json").unlink(missing_ok=True)
    args = ["gate", str(label_report_dir / "report.json"), "--policy", str(policy), "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert json.loads((label_report_dir / "gate.json").read_text()) == json.loads(result.stdout)
