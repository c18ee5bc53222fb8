"""Plan validation: every error names its key path; kinds, references and transitions are checked up front."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from xraydet.plan import PlanError, bundled_plans, load_plan, parse_plan
from xraydet.plan.schema import apply_overrides

REPO = Path(__file__).resolve().parents[2]

MINIMAL: dict[str, Any] = {
    "name": "mini",
    "datasets": {"main": "data/main.yaml"},
    "data": [{"id": "check-main", "kind": "check", "dataset": "@main"}],
    "phases": [
        {
            "id": "phase1",
            "job": {"model": "yolov8n.yaml", "data": "@main", "epochs": 4, "imgsz": 128},
            "transitions": [
                {"when": {"metric": "final.map50", "op": "<", "value": 0.4}, "goto": "phase2"},
                {"goto": "end"},
            ],
        },
        {"id": "phase2", "job": {"model": "yolov8n.yaml", "data": "@main", "epochs": 4, "imgsz": 128}},
    ],
}


def broken(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with one key (dotted, list items by index) set to ``value``."""
    raw = copy.deepcopy(MINIMAL)
    return apply_overrides(raw, [f"{path}={yaml.safe_dump(value, default_flow_style=True).strip()}"])


def problems_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(PlanError) as info:
        parse_plan(raw, "plan.yaml")
    assert "plan.yaml" in str(info.value)
    return info.value.problems


def test_minimal_plan_compiles_in_order() -> None:
    plan = parse_plan(MINIMAL)
    steps = plan.steps()
    assert [(s.id, s.kind, s.where) for s in steps] == [
        ("check-main", "check", "data[0]"),
        ("phase1", "train", "phases[0]"),
        ("phase2", "train", "phases[1]"),
    ]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "data.0.kind",
            "chek",
            "data[0].kind: unknown step kind 'chek' (valid kinds: check, convert, deploy",
        ),
        ("data.0.deep", "very", "data[0].deep: Input should be a valid boolean"),
        ("data.0.datset", "x", "data[0].datset: unknown key"),
        ("data.0.dataset", "@nowhere", "data[0].dataset: '@nowhere' names no data set or step"),
        ("data.0.id", "9bad", "data[0].id: String should match pattern"),
        ("phases.0.job.epochs", 0, "phases[0].job: key 'epochs': Input should be greater than or equal to 1"),
        ("phases.0.job.lr00", 0.1, "phases[0].job: unknown key 'lr00'"),
        ("phases.0.job.model", "yolov8n.pt", "phases[0].job: key 'model'"),
        ("phases.1.job.data", "@nope", "phases[1].job.data: '@nope' names no data set or step"),
        ("phases.0.transitions.0.when.op", "=<", "phases[0].transitions[0].when.op: Input should be '<'"),
        ("phases.0.transitions.0.when.metrc", "x", "phases[0].transitions[0].when.metrc: unknown key"),
        ("phases.0.transitions.0.goto", "phase9", "phases[0].transitions[0].goto: no step 'phase9'"),
        (
            "phases.1.transitions",
            [{"goto": "phase1"}],
            "phases[1].transitions[0].goto: 'phase1' is not after",
        ),
        (
            "phases.0.transitions.0.when",
            {"all": [{"metric": "a", "op": "<", "value": 1, "x": 1}]},
            "phases[0].transitions[0].when.all[0].x: unknown key",
        ),
        (
            "phases.0.transitions.0.when",
            {"metric": "a", "step": "ghost", "value": 1},
            "phases[0].transitions[0].when: reads step 'ghost'",
        ),
        (
            "phases.0.transitions.0.when",
            None,
            "phases[0].transitions[0]: a rule without 'when' must be the last",
        ),
        ("phases.1.id", "phase1", "phases[1].id: 'phase1' is already used by phases[0]"),
        ("phases.1.id", "end", "phases[1].id: 'end' is reserved"),
        (
            "cost.price_per_gpu_hour",
            -1,
            "cost.price_per_gpu_hour: Input should be greater than or equal to 0",
        ),
        (
            "evaluation",
            {"dataset": "@main", "via": "carrier-pigeon"},
            "evaluation.via: Input should be 'api'",
        ),
        ("evaluation", {"dataset": "@main", "candidate": "phase7"}, "evaluation.candidate: 'phase7' is not"),
        ("evaluation", {"dataset": "@main", "tta": "rotate"}, "evaluation.tta: Input should be 'off'"),
        ("gate", {"policy": {"min_mAP": 0.5}}, "gate.policy.min_mAP: unknown key"),
        ("gate", {"evaluation": "evaluate"}, "gate.evaluation: no step 'evaluate' in the plan"),
        ("deploy", {"model_name": "x", "gate": "nogate"}, "deploy.evaluation: no step 'evaluate'"),
        ("surprise", 1, "surprise: unknown key"),
        # YAML reads true/yes/on as booleans; pydantic would take them as 1
        ("cost.gpus", True, "cost.gpus: expected a number, got the boolean true"),
        (
            "data.0",
            {"id": "doc", "kind": "doctor", "dataset": "@main", "seed": -1},
            "data[0].seed: Input should be",
        ),
        (
            "data.0",
            {"id": "doc", "kind": "doctor", "dataset": "@main", "max_images": True},
            "data[0].max_images: expected a",
        ),
        (
            "evaluation",
            {"dataset": "@main", "conf": True},
            "evaluation.conf: expected a number, got the boolean",
        ),
        (
            "evaluation",
            {"dataset": "@main", "imgsz": True},
            "evaluation.imgsz: expected a number, got the boolean",
        ),
        (
            "gate",
            {"policy": {"min_reviewed": True}},
            "gate.policy.min_reviewed: expected a number, got the bool",
        ),
        ("phases.0.job.epochs", True, "phases[0].job: key 'epochs': expected a number, got the boolean true"),
    ],
)
def test_errors_name_the_key_path(path: str, value: Any, expected: str) -> None:
    problems = problems_of(broken(path, value))
    assert any(p.startswith(expected) for p in problems), problems


def test_projection_classes_are_left_to_the_real_data_set() -> None:
    """Validation uses a one-class stand-in data set; the real one, checked when the step runs, has more."""
    raw = copy.deepcopy(MINIMAL)
    raw["phases"][0]["job"]["xray_augment"] = {"threat_projection": 0.5, "projection_classes": [0, 1, 2]}
    assert [s.id for s in parse_plan(raw).steps()][1] == "phase1"
    raw["phases"][0]["job"]["xray_augment"]["projection_classes"] = "knives"
    assert any(p.startswith("phases[0].job: key 'xray_augment.projection_classes'") for p in problems_of(raw))


def test_relative_job_paths_resolve_against_the_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine.yaml").write_text("args: {lr0: 0.005}\n")
    (tmp_path / "start.pt").write_bytes(b"not inspected by validation")
    raw = copy.deepcopy(MINIMAL)
    raw["phases"][0]["job"].update(preset="mine.yaml", model="start.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert parse_plan(raw, base_dir=tmp_path).base_dir == tmp_path.resolve()
    assert any("'start.pt' is not a local file" in p for p in problems_of(raw))  # not in the current folder
    del raw["phases"][0]["job"]["model"]
    assert any("unknown preset 'mine.yaml'" in p for p in problems_of(raw))


def test_all_problems_are_reported_at_once() -> None:
    raw = broken("data.0.kind", "nope")
    raw = apply_overrides(raw, ["phases.phase1.transitions.0.goto=nowhere", "phases.phase2.job.epochs=-3"])
    problems = problems_of(raw)
    assert len(problems) == 3
    assert {p.split(":")[0] for p in problems} == {
        "data[0].kind",
        "phases[0].transitions[0].goto",
        "phases[1].job",
    }


def test_overrides_pick_list_items_by_id_or_index() -> None:
    raw = apply_overrides(
        MINIMAL, ["phases.phase2.job.epochs=9", "phases.0.job.imgsz=160", "cost.currency=EUR"]
    )
    assert raw["phases"][1]["job"]["epochs"] == 9
    assert raw["phases"][0]["job"]["imgsz"] == 160
    assert raw["cost"] == {"currency": "EUR"}
    assert MINIMAL["phases"][1]["job"]["epochs"] == 4  # the original is not touched
    with pytest.raises(PlanError, match=r"no item 'phase7'.*ids: phase1, phase2"):
        apply_overrides(MINIMAL, ["phases.phase7.job.epochs=1"])
    assert apply_overrides(MINIMAL, ["phases.phase2.job.data=@other"])["phases"][1]["job"]["data"] == "@other"
    with pytest.raises(PlanError, match=r"expected key\.path=value"):
        apply_overrides(MINIMAL, ["phases.phase1.job.epochs"])


def test_yaml_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nphases:\n  - id: a\n   job: {}\n")
    with pytest.raises(PlanError, match=r"bad.yaml: not valid YAML at line 4"):
        load_plan(path)
    with pytest.raises(PlanError, match=r"no such plan file.*cpu-demo"):
        load_plan(tmp_path / "missing.yaml")


def test_plan_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: x\n# r\xe9glages\n")  # line 2 in Latin-1: byte 11 is not UTF-8
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert str(err.value) == f"{path}: not UTF-8 text (byte 11) at line 2"
    assert err.value.problems == ["not UTF-8 text (byte 11) at line 2"]


@pytest.mark.parametrize("name", ["cpu-demo", "seed-improvement-plan"])
def test_shipped_plans_validate(name: str) -> None:
    plan = load_plan(name)
    ids = [s.id for s in plan.steps()]
    assert ids[-3:] == ["evaluate", "gate", "deploy"]
    assert "phase1" in ids and "phase2" in ids
    # the repository's plans/ folder points at the same files (one source of truth)
    assert (REPO / "plans" / f"{name}.yaml").resolve() == bundled_plans()[name].resolve()


def test_seed_plan_keeps_the_seeds_numbers() -> None:
    plan = load_plan("seed-improvement-plan")
    jobs = {p.id: p.job for p in plan.phases}
    assert (jobs["phase1"]["model"], jobs["phase1"]["epochs"], jobs["phase1"]["batch"]) == (
        "yolov8x.yaml",
        200,
        8,
    )
    assert jobs["phase1"]["gate"] == {"decision_epoch": 100, "continue_above": 0.40, "stop_below": 0.30}
    assert jobs["phase2"]["data"] == "@merge-cargo"
    assert (jobs["phase3"]["model"], jobs["phase3"]["epochs"], jobs["phase3"]["batch"]) == (
        "yolov8m.yaml",
        150,
        16,
    )
    assert jobs["phase3"]["data"] == "@luggage"
    policy = plan.gate.params()["policy"] if plan.gate else {}
    assert policy["min_reviewed"] == 100 and policy["min_map50"] == 0.50
