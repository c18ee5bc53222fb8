"""Every branch of the bundled improvement plans, driven through the real plan runner on tiny CPU trainings.

The conditions are forced for real: a NaN training loss comes from Ultralytics' own loss (patched to turn NaN
from a chosen training batch on), the decision gate's STOP / warn / continue from its thresholds set so that
a 1-epoch yolov8n (mAP50 about 0) falls on the wanted side, a "reached the target" branch from the plan's
own transition threshold scaled down with --set (no CPU minute reaches mAP50 0.40), and the release branches
from a human review, a real champion in the registry and `plan resume --redo`. Each test reads the plan's
persisted decision log: which step ran next, the rule that fired, and the numbers it read.

Branches covered elsewhere are not repeated: cpu-demo's Phase 1 STOP -> Phase 2 -> evaluate -> promote (no
champion yet) and a failed gate with no champion are in test_plan_e2e.py. Not reached: the seed's Phase 2
"final.map50 missing" alternative (a run stopped before its first validation is, in these plans, only one the
NaN rule has already sent to `fail`; a timeout validates the epoch it cuts short).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.model_edits import trigger_happy_copy
from ultralytics.utils.loss import v8DetectionLoss

from xraydet.plan import Plan, PlanState, load_plan, resume_plan, run_plan
from xraydet.plan.transitions import Compare

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

N_TRAIN, N_EXTRA, BATCH = 32, 16, 16  # Phase 1 trains 2 batches an epoch, Phase 2 (merged) 3


@dataclass(frozen=True)
class Bundled:
    name: str
    data_steps: tuple[str, ...]  # the data steps run before Phase 1, in order
    merge: str  # Phase 2's merge step
    phase2_prepare: tuple[str, ...]  # Phase 2's prepare steps, in order
    phases: tuple[str, ...]


SEED = Bundled(
    "seed-improvement-plan",
    ("check-luggage", "doctor-luggage"),
    "merge-cargo",
    ("merge-cargo", "check-merged"),
    ("phase1", "phase2", "phase3"),
)
DEMO = Bundled(
    "cpu-demo",
    ("synth-main", "synth-extra", "synth-negatives", "check-main", "doctor-main"),
    "merge-extra",
    ("merge-extra",),
    ("phase1", "phase2"),
)

# the decision gate's thresholds, against a 1-epoch model's mAP50 (0.0 here)
STOP = {"stop_below": 1.0, "continue_above": 1.0}  # below 1.0: stop
WARN = {"stop_below": 0.0, "continue_above": 1.0}  # in [0, 1): continue with a warning
CONTINUE = {"stop_below": 0.0, "continue_above": 0.0}  # >= 0: on track

# the cpu-demo's own synthetic data sets, shrunk
DEMO_DATA = [
    f"data.synth-main.n_train={N_TRAIN}",
    "data.synth-main.n_val=8",
    "data.synth-main.imgsz=128",
    f"data.synth-extra.n_train={N_EXTRA}",
    "data.synth-extra.n_val=8",
    "data.synth-extra.imgsz=128",
    "data.synth-negatives.n_val=8",
    "data.synth-negatives.imgsz=128",
]


@pytest.fixture(scope="module")
def seed_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """--set lines pointing the seed plan's luggage / cargo / negatives at tiny synthetic sets."""
    from xraydet.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("seed-data")
    generate(SynthConfig(n_train=N_TRAIN, n_val=8, imgsz=128, seed=0), root / "luggage")
    generate(SynthConfig(n_train=N_EXTRA, n_val=8, imgsz=128, seed=1), root / "cargo")
    generate(SynthConfig(n_train=0, n_val=8, imgsz=128, seed=2, threat_free_fraction=1.0), root / "negatives")
    return [f"datasets.{name}={root / name / 'data.yaml'}" for name in ("luggage", "cargo", "negatives")]


@pytest.fixture(params=[SEED, DEMO], ids=["seed", "cpu-demo"])
def bundled(request: pytest.FixtureRequest) -> tuple[Bundled, list[str]]:
    """Each bundled plan with the --set lines for its tiny data."""
    plan: Bundled = request.param
    return plan, request.getfixturevalue("seed_data") if plan is SEED else DEMO_DATA


def tiny(plan: Bundled, data: list[str], *sets: str, **gates: dict[str, float]) -> Plan:
    """``plan`` with 1-epoch yolov8n phases at 128 px on CPU, gates deciding at epoch 1 (``gates``: the
    thresholds of a phase), then ``sets``."""
    lines = [*data, "evaluation.latency_samples=3"]
    for phase in plan.phases:
        job = f"phases.{phase}.job"
        lines += [
            f"{job}.model=yolov8n.yaml",
            f"{job}.epochs=1",
            f"{job}.batch={BATCH}",
            f"{job}.imgsz=128",
            f"{job}.workers=0",
            f"{job}.device=cpu",
            f"{job}.checkpoint_every=0",
            f"{job}.plots=false",
            f"{job}.gate.decision_epoch=1",
        ]
        lines += [f"{job}.gate.{key}={value}" for key, value in gates.get(phase, {}).items()]
    return load_plan(plan.name, [*lines, *sets])


def target_rule(loaded: Plan, phase: str, index: int) -> Compare:
    """The phase's "below mAP50 0.40" comparison (checked, so the --set that scales it hits that rule)."""
    when = next(p for p in loaded.phases if p.id == phase).transitions[index].when
    cond = when.any[0] if hasattr(when, "any") else when
    assert isinstance(cond, Compare) and (cond.metric, cond.op) == ("final.map50", "<"), when
    return cond


def run(loaded: Plan, tmp_path: Path) -> tuple[PlanState, Path]:
    state_dir = tmp_path / "state"
    return run_plan(loaded, state_dir, base_dir=tmp_path), state_dir


def log_of(state_dir: Path) -> dict[str, Any]:
    return json.loads((state_dir / "decisions.json").read_text())


def entry(state_dir: Path, step: str) -> dict[str, Any]:
    return next(e for e in log_of(state_dir)["steps"] if e["id"] == step)


def took(state_dir: Path, step: str, rule: int, branch: str, numbers: dict[str, Any]) -> dict[str, Any]:
    """Assert the logged transition of ``step`` (rule index, branch, numbers read); return its log entry."""
    e = entry(state_dir, step)
    t = e["transition"]
    assert (t["rule"], t["branch"], t["numbers_read"]) == (rule, branch, numbers), t
    holds = [c["holds"] for c in t["conditions_checked"]]  # every rule before the one that fired was false
    assert holds == ([False] * len(holds) if t["rule_fired"] == "otherwise" else [False] * rule + [True]), t
    return e


def not_run(state: PlanState, *steps: str) -> None:
    for step in steps:
        record = state.records[step]
        assert (record.status, record.attempts, step in state.trail) == ("pending", 0, False), record


def gate_decision(e: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in e["decisions"] if d["what"].startswith("decision_gate at epoch"))


@pytest.fixture
def nan_loss(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, str], None]:
    """``arm(first, where)``: the training loss turns NaN from the ``first``-th (1-based) training batch of
    images whose path holds ``where`` on, as a diverging run's does; validation losses stay finite."""
    real = v8DetectionLoss.__call__
    armed: dict[str, Any] = {"first": None, "where": "", "seen": 0}

    def diverging(self: Any, preds: Any, batch: dict[str, Any]) -> Any:
        loss, items = real(self, preds, batch)
        if armed["first"] and torch.is_grad_enabled() and armed["where"] in str(batch["im_file"][0]):
            armed["seen"] += 1
            if armed["seen"] >= armed["first"]:
                loss = loss * math.nan
        return loss, items

    def arm(first: int, where: str = "") -> None:
        armed.update(first=first, where=where)

    monkeypatch.setattr(v8DetectionLoss, "__call__", diverging)
    return arm


def assert_nan_stop(e: dict[str, Any], epoch: int) -> None:
    """A run the nan_loss red flag stopped at the first batch of ``epoch``, on record as the plan reads it."""
    out = e["outcome"]
    assert out["status"] == "stopped" and out["stop_reason"].startswith(f"nan_loss at epoch {epoch}")
    assert out["verdicts"]["nan_loss"] == "stop" and out["red_flag_hooks"] == ["nan_loss"]
    assert out["epochs_completed"] == epoch - 1
    nan = next(d for d in e["decisions"] if d["what"] == f"nan_loss at epoch {epoch}")
    assert nan["decision"] == "stop" and nan["values"]["batch"] == 0
    assert nan["values"]["loss"] is None or math.isnan(nan["values"]["loss"])


# ------------------------------------------------------------------------------------------------ Phase 1


def test_nan_loss_in_phase1_fails_the_plan(
    bundled: tuple[Bundled, list[str]],
    tmp_path: Path,
    xraydet_home: Path,
    nan_loss: Callable[[int, str], None],
) -> None:
    plan, data = bundled
    nan_loss(N_TRAIN // BATCH + 1, "")  # epoch 2's first batch
    loaded = tiny(plan, data, "phases.phase1.job.epochs=2", phase1=CONTINUE)
    state, state_dir = run(loaded, tmp_path)

    assert (state.status, state.end) == ("failed", "fail")
    assert state.trail == [*plan.data_steps, "phase1"]
    p1 = took(state_dir, "phase1", 0, "fail", {"verdicts.nan_loss": "stop"})
    assert_nan_stop(p1, epoch=2)
    # the gate had judged epoch 1 on track; the NaN rule comes first, before "status == stopped"
    assert gate_decision(p1)["decision"] == "continue"
    assert len(p1["transition"]["conditions_checked"]) == 1
    not_run(state, plan.merge, "phase2", "evaluate", "gate", "deploy")
    markdown = (state_dir / "decisions.md").read_text()
    assert "- transition: rule 1 fired: `verdicts.nan_loss == 'stop'` -> **fail**" in markdown
    assert "- numbers read: verdicts.nan_loss = stop" in markdown
    assert "nan_loss at epoch 2: **stop**" in markdown and "(loss=nan, batch=0)" in markdown
    assert "Status: **failed** (ended with `fail`)" in markdown
    assert (state_dir / "report" / "report.md").is_file()


def test_phase1_below_target_then_nan_loss_in_phase2_fails_the_plan(
    bundled: tuple[Bundled, list[str]],
    tmp_path: Path,
    xraydet_home: Path,
    nan_loss: Callable[[int, str], None],
) -> None:
    plan, data = bundled
    merged_batches = -(-(N_TRAIN + N_EXTRA) // BATCH)
    nan_loss(merged_batches + 1, f"/steps/{plan.merge}/")  # Phase 2's epoch 2, first batch
    loaded = tiny(plan, data, "phases.phase2.job.epochs=2", phase1=CONTINUE, phase2=WARN)
    state, state_dir = run(loaded, tmp_path)

    assert (state.status, state.end) == ("failed", "fail")
    assert state.trail == [*plan.data_steps, "phase1", *plan.phase2_prepare, "phase2"]
    # Phase 1 completed (gate: on track) below mAP50 0.40: the third rule sends it to Phase 2's merge
    p1 = state.records["phase1"].outcome
    assert p1["status"] == "completed" and p1["decision"] == "continue" and p1["final"]["map50"] < 0.40
    took(
        state_dir,
        "phase1",
        2,
        plan.merge,
        {"verdicts.nan_loss": "missing", "status": "completed", "final.map50": p1["final"]["map50"]},
    )
    # Phase 2 trained on the merged set, warned at epoch 1, went NaN at epoch 2: fail, although its mAP50 is
    # below 0.40 too (the seed's next rule would send it to the smaller model, the demo's to the evaluation)
    p2 = took(state_dir, "phase2", 0, "fail", {"verdicts.nan_loss": "stop"})
    assert p2["outcome"]["data"].endswith(f"steps/{plan.merge}/data/data.yaml")
    assert_nan_stop(p2, epoch=2)
    assert gate_decision(p2)["decision"] == "warn" and p2["outcome"]["final"]["map50"] < 0.40
    not_run(state, *plan.phases[2:], "evaluate", "gate", "deploy")


def test_phase1_on_target_goes_straight_to_the_evaluation(
    bundled: tuple[Bundled, list[str]], tmp_path: Path, xraydet_home: Path
) -> None:
    plan, data = bundled
    # "Phase 1 ended below mAP50 0.40" scaled to 0.0: a 1-epoch model has "reached the target"
    loaded = tiny(plan, data, "phases.phase1.transitions.2.when.value=0.0", phase1=CONTINUE)
    assert target_rule(loaded, "phase1", 2).value == 0.0
    state, state_dir = run(loaded, tmp_path)

    assert state.status == "finished"
    assert state.trail == [*plan.data_steps, "phase1", "evaluate", "gate", "deploy"]
    p1 = state.records["phase1"].outcome
    e = took(
        state_dir,
        "phase1",
        3,
        "evaluate",
        {"verdicts.nan_loss": "missing", "status": "completed", "final.map50": p1["final"]["map50"]},
    )
    assert e["transition"]["rule_fired"] == "otherwise"
    assert [c["holds"] for c in e["transition"]["conditions_checked"]] == [False, False, False]
    assert gate_decision(e)["decision"] == "continue" and gate_decision(e)["values"]["continue_above"] == 0.0
    not_run(state, *plan.phase2_prepare, *plan.phases[1:])
    # the only phase on the path is the candidate; the plan's own readiness gate fails a 1-epoch model
    evaluation = state.records["evaluate"]
    assert evaluation.outcome["candidate"] == "phase1"
    assert evaluation.decisions[0]["values"] == {"phase1": p1["best"]["map50"]}
    assert state.records["gate"].outcome["passed"] is False
    deploy = state.records["deploy"].outcome
    assert deploy["action"] == "kept" and deploy["champion_after"] is None


# ----------------------------------------------------------------------------------- the seed's Phase 2 and 3


def test_seed_gate_stop_then_phase2_below_target_then_the_smaller_model(
    seed_data: list[str], tmp_path: Path, xraydet_home: Path
) -> None:
    loaded = tiny(SEED, seed_data, "phases.phase1.job.epochs=2", phase1=STOP, phase2=WARN)
    state, state_dir = run(loaded, tmp_path)

    assert state.status == "finished"
    assert state.trail == [
        *SEED.data_steps,
        "phase1",
        "merge-cargo",
        "check-merged",
        "phase2",
        "phase3",
        "evaluate",
        "gate",
        "deploy",
    ]
    # Phase 1: STOP at the epoch-1 decision point (of 2), with the mAP50 it read: Phase 2
    p1 = took(state_dir, "phase1", 1, "merge-cargo", {"verdicts.nan_loss": "missing", "status": "stopped"})
    gate1 = gate_decision(p1)
    assert gate1["what"] == "decision_gate at epoch 1" and gate1["decision"] == "stop"
    assert gate1["values"]["map50"] < gate1["values"]["stop_below"] == 1.0
    assert p1["outcome"]["epochs_completed"] == 1 and p1["outcome"]["decision"] == "stop"
    # Phase 2 (merged set) warned, completed below mAP50 0.40: the smaller model
    p2 = state.records["phase2"].outcome
    assert p2["status"] == "completed" and p2["decision"] == "warn"
    assert p2["data"].endswith("steps/merge-cargo/data/data.yaml")
    e2 = took(
        state_dir,
        "phase2",
        1,
        "phase3",
        {"verdicts.nan_loss": "missing", "final.map50": p2["final"]["map50"]},
    )
    assert e2["transition"]["note"] == "both phases below mAP50 0.40: try a smaller model"
    # Phase 3 on the original set: its gate (the seed's thresholds) says stop, on_stop=warn trains on
    p3 = took(state_dir, "phase3", 0, "evaluate", {})
    gate3 = gate_decision(p3)
    assert gate3["decision"] == "warn" and "on_stop=warn: continuing" in gate3["reason"]
    assert gate3["values"]["map50"] < gate3["values"]["stop_below"] == 0.30
    assert p3["outcome"]["status"] == "completed" and p3["outcome"]["data"] == p1["outcome"]["data"]
    # the evaluation picks the best of the three phases; the seed's gate fails it; nothing is served
    evaluation = state.records["evaluate"]
    scores = evaluation.decisions[0]["values"]
    assert set(scores) == {"phase1", "phase2", "phase3"}
    assert scores[evaluation.outcome["candidate"]] == max(scores.values())
    gate = state.records["gate"].outcome
    assert gate["passed"] is False and {"mAP50", "predictions reviewed"} <= set(gate["failed"])
    deploy = state.records["deploy"].outcome
    assert (deploy["action"], deploy["champion_after"]) == ("kept", None)
    assert "readiness gate failed" in deploy["reason"]


def test_seed_phase2_on_target_skips_the_smaller_model(
    seed_data: list[str], tmp_path: Path, xraydet_home: Path
) -> None:
    loaded = tiny(SEED, seed_data, "phases.phase2.transitions.1.when.any.0.value=0.0", phase1=CONTINUE)
    assert target_rule(loaded, "phase2", 1).value == 0.0
    state, state_dir = run(loaded, tmp_path)

    assert state.status == "finished"
    assert state.trail == [
        *SEED.data_steps,
        "phase1",
        "merge-cargo",
        "check-merged",
        "phase2",
        "evaluate",
        "gate",
        "deploy",
    ]
    p2 = state.records["phase2"].outcome
    e = took(
        state_dir,
        "phase2",
        2,
        "evaluate",
        {"verdicts.nan_loss": "missing", "final.map50": p2["final"]["map50"]},
    )
    assert [c["holds"] for c in e["transition"]["conditions_checked"]] == [False, False]
    not_run(state, "phase3")
    assert set(state.records["evaluate"].decisions[0]["values"]) == {"phase1", "phase2"}


def test_seed_nan_loss_in_phase3_still_goes_to_the_evaluation(
    seed_data: list[str], tmp_path: Path, xraydet_home: Path, nan_loss: Callable[[int, str], None]
) -> None:
    """Phase 3 has no NaN rule (the seed plan's last resort): a NaN in its first batch, before any
    validation, leaves a phase with no mAP50; the evaluation picks among the phases that have one."""
    # counted on the luggage set's own images: Phase 1's 2 batches, then Phase 3's first (Phase 2 trains on
    # the merged copy)
    nan_loss(N_TRAIN // BATCH + 1, "/luggage/images/train/")
    loaded = tiny(SEED, seed_data, phase1=CONTINUE, phase2=WARN)
    state, state_dir = run(loaded, tmp_path)

    assert state.status == "finished", state.records["evaluate"].error
    assert state.trail[-6:] == ["check-merged", "phase2", "phase3", "evaluate", "gate", "deploy"]
    p3 = took(state_dir, "phase3", 0, "evaluate", {})
    assert_nan_stop(p3, epoch=1)
    assert p3["outcome"]["best"] == {} and "decision_gate" not in p3["outcome"]["verdicts"]
    evaluation = state.records["evaluate"]
    assert evaluation.outcome["candidate"] in ("phase1", "phase2")
    assert evaluation.decisions[0]["values"]["phase3"] == "missing"  # logged as the transitions log it


# --------------------------------------------------------------------------------------- release branches


def test_seed_release_keeps_the_champion_unless_the_gate_passes_and_it_is_not_worse(
    seed_data: list[str], tmp_path: Path, xraydet_home: Path
) -> None:
    """Gate failed: the current model stays (none yet, then a real champion); a person reviews, the gate is
    checked again and passes, but the candidate is worse than the champion: kept; against a champion it is
    not worse than: promoted. Training and evaluation run once; `plan resume --redo` redoes the rest."""
    from xraydet.evaluation.report import load_report
    from xraydet.evaluation.review.store import VerdictStore
    from xraydet.registry import champion, register_model
    from xraydet.registry.store import list_versions, set_champion

    off = ("min_map50", "min_accuracy", "min_threat_detection", "max_false_alarm_rate", "max_latency_p95_ms")
    review_only = [f"gate.policy.{k}=null" for k in off] + [
        "gate.policy.min_reviewed=3",
        "gate.policy.min_approval=0.5",
    ]
    loaded = tiny(
        SEED, seed_data, "phases.phase1.transitions.2.when.value=0.0", *review_only, phase1=CONTINUE
    )
    state, state_dir = run(loaded, tmp_path)
    name = "xray-threats"

    def release(state: PlanState) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        deploy = state.records["deploy"]
        return state.records["gate"].outcome, deploy.outcome, deploy.decisions[0]

    # 1. nobody reviewed yet: the gate fails, no champion: nothing is served
    gate, deploy, promotion = release(state)
    assert gate["passed"] is False and gate["failed"] == ["predictions reviewed", "review approval share"]
    assert (deploy["action"], deploy["champion_before"], deploy["champion_after"]) == ("kept", None, None)
    assert promotion["decision"] == "not attempted" and deploy["reason"].endswith(
        "no champion yet: nothing is served"
    )
    first_version = deploy["version"]

    # a champion that fires on every bag (a real, clearly different model): this phase's weights, class
    # logits pushed up
    best = Path(state.records["phase1"].outputs["best_weights"])
    trigger_happy = register_model(trigger_happy_copy(best, tmp_path / "champion" / "trigger_happy.pt"), name)
    set_champion(name, trigger_happy, [])

    # 2. the gate checked again, still unreviewed: it fails and the champion stays (the seed's rollback plan)
    state = resume_plan(state_dir, redo=["gate"])
    gate, deploy, promotion = release(state)
    assert state.records["phase1"].reused and state.records["evaluate"].reused
    assert (state.records["phase1"].attempts, state.records["evaluate"].attempts) == (1, 1)
    assert state.records["gate"].attempts == 2 and gate["passed"] is False
    assert (deploy["action"], deploy["champion_before"], deploy["champion_after"]) == (
        "kept",
        trigger_happy,
        trigger_happy,
    )
    assert promotion["decision"] == "not attempted" and deploy["version"] == first_version
    assert deploy["reason"].endswith(f"v{trigger_happy} stays the champion")

    # 3. a person reviews 3 predictions (all correct): the gate passes, the promotion compares with the
    # champion on the same images, and the candidate finds fewer threats: refused, the champion stays
    report_dir = Path(state.records["evaluate"].outputs["report_dir"])
    store = VerdictStore.open_or_create(report_dir / "review", load_report(report_dir).report_id)
    for i in range(3):
        store.set(f"{i:06d}", "correct")
    state = resume_plan(state_dir, redo=["gate"])
    gate, deploy, promotion = release(state)
    assert gate["passed"] is True and gate["criteria"]["predictions reviewed"]["value"] == 3
    assert (deploy["action"], deploy["champion_before"], deploy["champion_after"]) == (
        "kept",
        trigger_happy,
        trigger_happy,
    )
    assert promotion["decision"] == "refused" and deploy["version"] == first_version
    assert f"worse than champion v{trigger_happy}: threat_detection_rate" in deploy["reason"]
    ours, theirs = promotion["values"]["candidate"], promotion["values"]["champion"]
    assert theirs["threat_detection_rate"] > ours["threat_detection_rate"] + 0.005
    assert champion(name) == trigger_happy

    # 4. against a champion it is not worse than (the same weights, registered by hand): promoted, as the
    # version the plan registered the first time (a redo never registers the same weights again)
    twin = register_model(best, name)
    set_champion(name, twin, [trigger_happy])
    state = resume_plan(state_dir, redo=["deploy"])
    _, deploy, promotion = release(state)
    assert state.records["gate"].reused and state.records["deploy"].attempts == 4
    assert (deploy["action"], deploy["champion_before"]) == ("promoted", twin)
    assert deploy["champion_after"] == deploy["version"] == champion(name) == first_version
    assert promotion["decision"] == "promoted"
    assert deploy["reason"].startswith(f"gate passed and not worse than champion v{twin}")
    assert sorted(v.version for v in list_versions(name)) == sorted([first_version, trigger_happy, twin])
    assert "-> **end**" in (state_dir / "decisions.md").read_text()
    assert "**promoted**" in (state_dir / "report" / "report.md").read_text()
