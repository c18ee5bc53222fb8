"""The shipped GPU recipe plan (xray-fast-gpu) run end to end on CPU, shrunk with --set: data check and
doctor, one training with validation every N epochs, evaluation through the real API, the seed's production
gate (which a 4-epoch model fails) and the deploy step keeping the current model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xraydet.plan import bundled_plans, load_plan, run_plan
from xraydet.training.history import is_validated

REPO = Path(__file__).resolve().parents[2]


def test_the_plan_trains_the_measured_recipe() -> None:
    plan = load_plan("xray-fast-gpu")
    assert [s.id for s in plan.steps()] == [
        "check-opixray",
        "doctor-opixray",
        "phase1",
        "evaluate",
        "gate",
        "deploy",
    ]
    job = plan.phases[0].job
    assert (job["model"], job["preset"], job["val_every"], job["imgsz"]) == (
        "yolov8s.yaml",
        "xray-fast",
        10,
        640,
    )
    assert job["overrides"]["time"] * 60 <= 9  # the budget: one run of at most 9 minutes
    job_file = yaml.safe_load((REPO / "examples" / "jobs" / "xray-fast-gpu.yaml").read_text())
    # the plan trains the job file's run
    shared = ("model", "preset", "epochs", "imgsz", "workers", "seed", "save_every", "checkpoint_every")
    assert {k: job[k] for k in (*shared, "overrides")} == {k: job_file[k] for k in (*shared, "overrides")}
    assert (REPO / "plans" / "xray-fast-gpu.yaml").resolve() == bundled_plans()["xray-fast-gpu"].resolve()


@pytest.fixture(scope="module")
def synth_negatives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xraydet.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("negatives") / "negatives"
    generate(SynthConfig(n_train=0, n_val=8, imgsz=160, seed=3, threat_free_fraction=1.0), out)
    return out / "data.yaml"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_xray_fast_gpu_plan_on_cpu(
    synth_yaml: Path, synth_negatives: Path, tmp_path: Path, xraydet_home: Path
) -> None:
    job = "phases.phase1.job"
    plan = load_plan(
        "xray-fast-gpu",
        [
            f"datasets.opixray={synth_yaml}",
            f"datasets.negatives={synth_negatives}",
            f"{job}.model=yolov8n.yaml",  # the recipe's model and budget are a GPU's: only sizes shrink
            f"{job}.epochs=4",
            f"{job}.val_every=3",
            f"{job}.imgsz=128",
            f"{job}.batch=8",
            f"{job}.workers=0",
            f"{job}.device=cpu",
            f"{job}.overrides={{time: null, cache: false}}",
            f"{job}.gate.decision_epoch=1",
            f"{job}.gate.stop_below=0.0",
            "evaluation.latency_samples=3",
        ],
    )
    state_dir = tmp_path / "state"
    state = run_plan(plan, state_dir, base_dir=tmp_path)

    assert state.status == "finished", state.records
    assert state.trail == ["check-opixray", "doctor-opixray", "phase1", "evaluate", "gate", "deploy"]
    phase1 = state.records["phase1"]
    assert phase1.outcome["status"] == "completed" and phase1.outcome["epochs_completed"] == 4
    # the plan's curve keeps only validated epochs: the gate's (1), every third (3) and the last (4)
    assert [h["epoch"] for h in phase1.details["history"]] == [1, 3, 4]
    assert all(is_validated(h) for h in phase1.details["history"])

    gate = state.records["gate"]
    assert gate.outcome["passed"] is False  # a 4-epoch CPU model is no production model
    deploy = state.records["deploy"].outcome
    assert deploy["action"] != "promoted" and deploy["champion_after"] is None
