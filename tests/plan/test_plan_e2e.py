"""The shipped CPU demo plan, shrunk with --set overrides, run for real: synth data, two trainings with
decision gates, ONNX export, evaluation through the real API, the readiness gate, MLflow registry, deploy.
Then a plan killed with SIGKILL during Phase 2 and resumed: Phase 1 is not trained again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from xraydet.plan import load_plan, plan_status, resume_plan, run_plan
from xraydet.plan.state import fingerprint
from xraydet.training import load_run_result

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY = [
    "data.synth-main.n_train=48",
    "data.synth-main.n_val=16",
    "data.synth-main.imgsz=128",
    "data.synth-extra.n_train=16",
    "data.synth-extra.n_val=8",
    "data.synth-extra.imgsz=128",
    "data.synth-negatives.n_val=8",
    "data.synth-negatives.imgsz=128",
    "phases.phase1.job.imgsz=128",
    "phases.phase1.job.epochs=2",
    "phases.phase1.job.gate.decision_epoch=1",
    "phases.phase2.job.imgsz=128",
    "phases.phase2.job.epochs=2",
    "phases.phase2.job.gate.decision_epoch=1",
    # Phase 1 must stop at its decision point: no 1-epoch model reaches mAP50 1.0
    "phases.phase1.job.gate.continue_above=1.0",
    "phases.phase1.job.gate.stop_below=1.0",
    "evaluation.latency_samples=3",
]


# a 2-epoch model's accuracy is noise: these limits off, the gate still checks latency and gets promoted
GATE_OFF = ["gate.policy.min_map50=null", "gate.policy.max_false_alarm_rate=null"]


def log_entry(state_dir: Path, step: str) -> dict[str, Any]:
    log = json.loads((state_dir / "decisions.json").read_text())
    return next(e for e in log["steps"] if e["id"] == step)


def test_cpu_demo_end_to_end(tmp_path: Path, xraydet_home: Path) -> None:
    # the served model fuses mirrored views; the report must say so, as the API tells the client
    plan = load_plan("cpu-demo", [*TINY, *GATE_OFF, "evaluation.tta=hflip"])
    state_dir = tmp_path / "state"
    state = run_plan(plan, state_dir, base_dir=tmp_path)

    assert state.status == "finished", state.records
    assert state.trail == [
        "synth-main",
        "synth-extra",
        "synth-negatives",
        "check-main",
        "doctor-main",
        "phase1",
        "merge-extra",
        "phase2",
        "evaluate",
        "gate",
        "deploy",
    ]

    # Phase 1 stopped at its decision point, and the log shows that decision with its number
    p1 = log_entry(state_dir, "phase1")
    assert p1["outcome"]["status"] == "stopped" and p1["outcome"]["epochs_completed"] == 1
    gate1 = next(d for d in p1["decisions"] if d["what"] == "decision_gate at epoch 1")
    assert gate1["decision"] == "stop" and 0.0 <= gate1["values"]["map50"] < 1.0
    assert gate1["values"]["stop_below"] == 1.0
    assert p1["transition"]["branch"] == "merge-extra" and p1["transition"]["numbers_read"] == {
        "verdicts.nan_loss": p1["outcome"]["verdicts"].get("nan_loss", "missing"),
        "status": "stopped",
    }

    # Phase 2 trained on the merged set, decided at epoch 1 (warn only) and went on to the evaluation
    p2 = log_entry(state_dir, "phase2")
    assert p2["outcome"]["data"].endswith("steps/merge-extra/data/data.yaml")
    assert p2["outcome"]["epochs_completed"] == 2
    gate2 = next(d for d in p2["decisions"] if d["what"] == "decision_gate at epoch 1")
    assert gate2["decision"] in ("continue", "warn") and "map50" in gate2["values"]
    assert p2["transition"]["branch"] == "evaluate"

    # evaluation through the API, the gate table and a promotion that really moved the champion
    evaluation = state.records["evaluate"]
    assert evaluation.outputs["via"] == "api" and Path(evaluation.outputs["model"]).suffix == ".onnx"
    assert evaluation.outcome["n_images"] == 16 and evaluation.outcome["n_negative_images"] == 8
    assert evaluation.outputs["tta"] == "hflip"
    assert json.loads((Path(evaluation.outputs["report_dir"]) / "report.json").read_text())["tta"] == "hflip"
    gate = state.records["gate"]
    assert len(gate.details["criteria"]) == 7
    assert gate.outcome["passed"] is True
    deploy = state.records["deploy"].outcome
    assert deploy["action"] == "promoted" and deploy["champion_before"] is None
    assert deploy["champion_after"] == deploy["version"]

    # the report: both phases side by side, one plot, the gate table, what was deployed
    report = json.loads((state_dir / "report" / "report.json").read_text())
    assert [r["phase"] for r in report["phases"]] == ["phase1", "phase2"]
    for row in report["phases"]:  # each phase's training-loop speed, from its run's summary
        run = load_run_result(state.records[row["phase"]].outputs["run_dir"])
        assert row["images_per_s"] == run.throughput["train_images_per_s"] > 0
    assert Path(report["curve_png"]).stat().st_size > 10_000
    markdown = (state_dir / "report" / "report.md").read_text()
    assert (
        "| phase1 | stopped" in markdown and "**promoted**" in markdown and "predictions reviewed" in markdown
    )

    # the champion is served from the registry, as `xraydet serve --model xray-demo` does, and answers
    from xraydet.plan.release_steps import serve_model

    image = next((state_dir / "steps" / "synth-main" / "data" / "images" / "val").iterdir())
    with serve_model("xray-demo") as url:
        health = httpx.get(f"{url}/health").json()
        reply = httpx.post(f"{url}/v1/detect", files={"file": (image.name, image.read_bytes(), "image/jpeg")})
    assert health["model_loaded"] is True and str(health["version"]) == deploy["version"]
    assert reply.status_code == 200 and "items" in reply.json()

    # running it again redoes nothing
    again = run_plan(plan, state_dir, base_dir=tmp_path)
    assert all(again.records[s].reused for s in again.trail)
    assert again.records["phase1"].attempts == 1 and again.records["deploy"].attempts == 1


def test_kill_during_phase2_then_resume(tmp_path: Path, xraydet_home: Path) -> None:
    state_dir = tmp_path / "state"
    sets = [*TINY, "phases.phase2.job.epochs=4", "gate.policy.min_map50=0.99"]
    command = [
        sys.executable,
        "-m",
        "xraydet.cli.main",
        "plan",
        "run",
        "cpu-demo",
        "--state-dir",
        str(state_dir),
    ]
    for item in sets:
        command += ["--set", item]
    env = {**os.environ, "XRAYDET_HOME": str(xraydet_home), "YOLO_OFFLINE": "true", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # kill once Phase 2 has finished an epoch and its checkpoint (the run's state.json follows last.pt)
    phase2_state = state_dir / "steps" / "phase2" / "run" / "state.json"
    try:
        deadline = time.monotonic() + 400
        while not (phase2_state.is_file() and json.loads(phase2_state.read_text()).get("epoch", 0) >= 1):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "Phase 2 never got through an epoch"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    killed = plan_status(state_dir)
    assert killed.current == "phase2" and killed.records["phase2"].status == "running"
    phase1_run = Path(killed.records["phase1"].outputs["run_dir"])
    before = (fingerprint(phase1_run), phase1_run.stat().st_mtime_ns)

    state = resume_plan(state_dir)

    assert state.status == "finished"
    p1, p2 = state.records["phase1"], state.records["phase2"]
    assert p1.attempts == 1 and p1.reused  # Phase 1 was not trained again
    assert (fingerprint(phase1_run), phase1_run.stat().st_mtime_ns) == before
    assert p2.attempts == 2 and p2.details["resumes"], "Phase 2 resumed from its last.pt"
    assert p2.decisions[0]["decision"] == "resumed" and p2.decisions[0]["values"]["from_epoch"] >= 1
    assert p2.outcome["epochs_completed"] == 4
    # the gate fails (min mAP50 0.99) and there is no champion yet: the deploy step keeps what there is
    assert state.records["gate"].outcome["passed"] is False
    deploy = state.records["deploy"].outcome
    assert deploy["action"] == "kept" and deploy["champion_after"] is None
    assert "readiness gate failed (mAP50)" in deploy["reason"]
    markdown = (state_dir / "decisions.md").read_text()
    assert "## phase1 (train)" in markdown and "outputs intact, not run again" in markdown
