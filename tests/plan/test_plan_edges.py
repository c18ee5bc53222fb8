"""Edge cases of plan files and state dirs: what is caught when the plan is validated, not hours later when a
step runs, and what a run must never overwrite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xraydet.plan import PlanError, load_plan, parse_plan, plan_status, resume_plan, run_plan
from xraydet.plan.runner import load_snapshot


def scored(step_id: str, value: float = 0.5, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "score", "value": value, **extra}


@pytest.mark.usefixtures("test_kinds")
def test_a_not_condition_survives_the_snapshot(tmp_path: Path) -> None:
    """The snapshot spells `not` as a plan file does (the field is `not_`), so status and resume read it."""
    rule = {"when": {"not": {"metric": "final.map50", "op": ">", "value": 0.9}}, "goto": "last"}
    plan = parse_plan(
        {"name": "negated", "data": [scored("first", transitions=[rule]), scored("skipped"), scored("last")]}
    )
    state = run_plan(plan, tmp_path)
    assert state.trail == ["first", "last"]
    assert load_snapshot(tmp_path).fingerprint() == plan.fingerprint()
    assert resume_plan(tmp_path).status == "finished"


@pytest.mark.usefixtures("test_kinds")
@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            [{"id": "use", "kind": "check", "dataset": "@make"}, scored("make")],
            "data[0].dataset: '@make' names step 'make', which comes after it",
        ),
        (
            [{"id": "use", "kind": "check", "dataset": "@use"}],
            "data[0].dataset: '@use' names this step itself",
        ),
        (
            [{"id": "both", "kind": "merge", "sources": ["@main", "@later"]}, scored("later")],
            "data[0].sources[1]: '@later' names step 'later', which comes after it",
        ),
        (
            [
                scored(
                    "first",
                    transitions=[
                        {"when": {"step": "second", "metric": "status", "op": "exists"}, "goto": "end"}
                    ],
                ),
                scored("second"),
            ],
            "data[0].transitions[0].when: reads step 'second', which comes after this step",
        ),
    ],
    ids=["later-step", "itself", "later-in-a-list", "rule-reads-a-later-step"],
)
def test_a_step_can_only_read_steps_before_it(data: list[dict[str, Any]], problem: str) -> None:
    """Steps run in order: what a later step makes (or reports) does not exist yet, on any path."""
    with pytest.raises(PlanError) as info:
        parse_plan({"name": "order", "datasets": {"main": "main.yaml"}, "data": data}, "plan.yaml")
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_a_phase_reading_an_earlier_data_step_is_fine() -> None:
    plan = parse_plan(
        {
            "name": "forward",
            "data": [{"id": "make", "kind": "synth", "n_train": 2, "n_val": 1, "imgsz": 64}],
            "phases": [{"id": "phase1", "job": {"data": "@make", "imgsz": 64}}],
        }
    )
    assert [s.id for s in plan.steps()] == ["make", "phase1"]


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        (
            "name: dup\ndata:\n  - id: s\n    kind: synth\n    transitions: [{goto: fail}]\n"
            "    transitions: []\n",
            6,
            "transitions",
            5,
        ),
        ("name: dup\nname: again\ndata: []\n", 2, "name", 1),
        ("name: dup\ndata:\n  - {id: s, kind: synth, n_train: 2, n_train: 9}\n", 3, "n_train", 3),
    ],
    ids=["a-second-transitions-list", "top-level", "in-a-flow-mapping"],
)
def test_a_key_written_twice_is_an_error_with_its_line(
    tmp_path: Path, text: str, line: int, key: str, first: int
) -> None:
    """YAML keys are unique; PyYAML would keep the last silently (dropping the first rule list)."""
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(
        PlanError,
        match=rf"plan\.yaml: not valid YAML at line {line}: duplicate key '{key}' "
        rf"\(first at line {first}\)",
    ):
        load_plan(path)


def test_merge_keys_may_still_override_what_they_merge(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: merged\ndata:\n  - &base {id: s, kind: synth, n_train: 2, n_val: 1, imgsz: 64}\n"
        "  - <<: *base\n    id: t\n    n_train: 4\n"
    )
    steps = load_plan(path).steps()
    assert [(s.id, s.params.model_dump()["n_train"]) for s in steps] == [("s", 2), ("t", 4)]


@pytest.mark.parametrize(
    ("job_file", "problem"),
    [
        (None, r"phases\[0\]\.job_file: .*nowhere\.yaml not found"),
        (
            "model: yolov8n.yaml\nepoch: 3\n",
            r"phases\[0\]\.job \(with job_file .*job\.yaml\): unknown key 'epoch'",
        ),
        ("model: [\n", r"phases\[0\]\.job_file: .*job\.yaml:2: not valid YAML"),
        ("- model\n", r"phases\[0\]\.job_file: .*job\.yaml: expected a mapping of job keys"),
        (
            "epochs: 3\nepochs: 4\n",
            r"phases\[0\]\.job_file: .*job\.yaml:2: not valid YAML: duplicate key 'epochs'",
        ),
        ("model: yolov8n.yaml\n", None),
    ],
    ids=["missing", "typo-in-the-file", "not-yaml", "a-list", "duplicate-key", "fine"],
)
def test_a_job_file_is_validated_with_the_plan(
    tmp_path: Path, job_file: str | None, problem: str | None
) -> None:
    """A phase's job_file (and the inline keys over it) is checked up front, naming the file, like an inline
    job: not when the phase starts, after the data steps (and maybe other phases) have run."""
    if job_file is not None:
        (tmp_path / "job.yaml").write_text(job_file)
    raw = {
        "name": "jobfile",
        "datasets": {"main": "main.yaml"},
        "phases": [
            {"id": "phase1", "job_file": "job.yaml" if job_file else "nowhere.yaml", "job": {"data": "@main"}}
        ],
    }
    if problem is None:
        assert [s.id for s in parse_plan(raw, base_dir=tmp_path).steps()] == ["phase1"]
        return
    with pytest.raises(PlanError, match=problem):
        parse_plan(raw, "plan.yaml", base_dir=tmp_path)


def test_a_job_file_without_data_needs_it_inline(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("model: yolov8n.yaml\n")
    raw = {"name": "nodata", "phases": [{"id": "phase1", "job_file": "job.yaml"}]}
    with pytest.raises(PlanError, match=r"phases\[0\]\.job\.data: required"):
        parse_plan(raw, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (None, r"gate\.policy_file: .*nowhere\.yaml: policy file not found"),
        ("min_mAP50: 0.5\n", r"gate\.policy_file: .*policy\.yaml: unknown key 'min_mAP50'"),
        ("min_map50: 0.5\n", None),
    ],
    ids=["missing", "bad-key", "fine"],
)
def test_a_gate_policy_file_is_validated_with_the_plan(
    tmp_path: Path, policy: str | None, problem: str | None
) -> None:
    """The gate runs last, after every training: a missing or bad policy file must not wait until then."""
    if policy is not None:
        (tmp_path / "policy.yaml").write_text(policy)
    raw = {
        "name": "policy",
        "datasets": {"main": "main.yaml"},
        "phases": [{"id": "phase1", "job": {"data": "@main"}}],
        "evaluation": {"dataset": "@main"},
        "gate": {"policy_file": "policy.yaml" if policy else "nowhere.yaml"},
    }
    if problem is None:
        assert parse_plan(raw, base_dir=tmp_path).steps()[-1].id == "gate"
        return
    with pytest.raises(PlanError, match=problem):
        parse_plan(raw, "plan.yaml", base_dir=tmp_path)


@pytest.mark.usefixtures("test_kinds")
def test_a_new_state_dir_is_missing_or_empty(tmp_path: Path) -> None:
    """The state dir gets plan.yaml, state.json, steps/, report/: a folder of a person's own files (their
    plan.yaml, say) is refused, not written into; a file is refused without a traceback."""
    plan = parse_plan({"name": "mine", "data": [scored("first")]})
    own = tmp_path / "plan.yaml"
    own.write_text("# my plan, with comments\nname: mine\n")
    with pytest.raises(PlanError, match=r"not empty and holds no plan state \(state\.json\)"):
        run_plan(plan, tmp_path)
    assert own.read_text() == "# my plan, with comments\nname: mine\n"
    assert not (tmp_path / "state.json").exists()

    with pytest.raises(PlanError, match="exists and is not a folder"):
        run_plan(plan, own)

    (tmp_path / "empty").mkdir()
    assert run_plan(plan, tmp_path / "empty").status == "finished"
    assert run_plan(plan, tmp_path / "empty").status == "finished"  # its own state: goes on
    assert plan_status(tmp_path / "empty").trail == ["first"]


@pytest.mark.usefixtures("test_kinds")
def test_a_damaged_state_file_names_the_field_at_fault(tmp_path: Path) -> None:
    run_plan(parse_plan({"name": "mine", "data": [scored("first")]}), tmp_path)
    (tmp_path / "state.json").write_text('{"version": 1}')
    with pytest.raises(PlanError, match=r"state\.json is damaged: plan_name: Field required"):
        plan_status(tmp_path)


@pytest.mark.usefixtures("test_kinds")
def test_a_plan_keeps_its_job_and_policy_files_as_they_were_when_it_started(tmp_path: Path) -> None:
    """The phases left must not train with other settings than the finished ones: an edit to a job file
    after the start makes `plan run` see another plan, `plan resume` goes on with the file as it was, and
    neither (nor `plan status`) needs the file any more."""
    job = tmp_path / "job.yaml"
    job.write_text("epochs: 3\n")
    (tmp_path / "policy.yaml").write_text("min_map50: 0.45\n")
    raw = {
        "name": "edited",
        "datasets": {"main": str(tmp_path / "absent" / "data.yaml")},  # the phase fails fast when it runs
        "data": [{"id": "first", "kind": "ctrl-c"}],
        "phases": [{"id": "phase1", "job_file": "job.yaml", "job": {"data": "@main", "imgsz": 64}}],
        "evaluation": {"dataset": "@main"},
        "gate": {"policy_file": "policy.yaml", "policy": {"min_accuracy": 0.5}},
    }
    state_dir = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        run_plan(parse_plan(raw, base_dir=tmp_path), state_dir, base_dir=tmp_path)
    snapshot = load_snapshot(state_dir)
    assert snapshot.phases[0].job == {"epochs": 3, "data": "@main", "imgsz": 64}  # inline keys still win
    assert snapshot.phases[0].job_file is None
    assert snapshot.gate is not None and "policy_file" not in snapshot.gate.params()
    policy = snapshot.gate.params()["policy"]
    assert (policy["min_map50"], policy["min_accuracy"]) == (0.45, 0.5)

    job.write_text("epochs: 300\n")
    with pytest.raises(PlanError, match=r"the same plan changed, its job or policy files included"):
        run_plan(parse_plan(raw, base_dir=tmp_path), state_dir, base_dir=tmp_path)
    job.unlink()
    (tmp_path / "policy.yaml").unlink()
    assert plan_status(state_dir).records["first"].status == "interrupted"
    assert [s.id for s in load_snapshot(state_dir).steps()][:2] == ["first", "phase1"]
    with pytest.raises(PlanError, match=r"step 'phase1' \(train\) failed: .*absent.*does not exist"):
        resume_plan(state_dir)  # it ran, from the snapshot, and stopped at the absent data set
    assert plan_status(state_dir).records["first"].status == "done"


def test_an_api_evaluation_that_cannot_start_says_why(onnx_model: Path) -> None:
    """The served model refuses the size asked (it is fixed at 160): the step's error says so, not only
    uvicorn's log."""
    from xraydet.plan.release_steps import serve_model
    from xraydet.plan.steps import StepFailed

    refused = r"the API for .* did not start: --imgsz 320: .* fixed 160x160 input"
    with pytest.raises(StepFailed, match=refused), serve_model(onnx_model, imgsz=320):
        pass


def _yolo_set(root: Path, images: dict[str, tuple[str, int]]) -> Path:
    """A one-class set: ``{"split/stem": (label line, pixel seed)}``; equal seeds make identical images."""
    import numpy as np
    import yaml
    from PIL import Image

    for key, (line, seed) in images.items():
        split, stem = key.split("/")
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / split / f"{stem}.png")
        (root / "labels" / split / f"{stem}.txt").write_text(line + "\n")
    splits = {s: f"images/{s}" for s in ("train", "val")}
    (root / "data.yaml").write_text(yaml.safe_dump({**splits, "names": {0: "knife"}}))
    return root / "data.yaml"


def test_a_merge_step_drops_and_counts_an_image_leaking_into_val(tmp_path: Path) -> None:
    """The same scan in one set's train and another's val: the plan's merged set must not leak it."""
    a = _yolo_set(tmp_path / "a", {"train/t0": ("0 0.5 0.5 0.2 0.2", 1), "val/v0": ("0 0.5 0.5 0.2 0.2", 2)})
    b = _yolo_set(tmp_path / "b", {"train/t1": ("0 0.4 0.4 0.2 0.2", 3), "val/v1": ("0 0.5 0.5 0.2 0.2", 1)})
    plan = parse_plan(
        {
            "name": "leak",
            "datasets": {"a": str(a), "b": str(b)},
            "data": [{"id": "both", "kind": "merge", "sources": ["@a", "@b"]}],
        }
    )
    state = run_plan(plan, tmp_path / "state")
    outcome = state.records["both"].outcome
    assert (outcome["leaks_dropped"], outcome["leaks_kept"]) == (1, 0)
    merged = tmp_path / "state" / "steps" / "both" / "data"
    assert sorted(p.name for p in (merged / "images" / "val").iterdir()) == ["v0.png"]
