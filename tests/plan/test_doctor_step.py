"""The plan's doctor step stops a plan whose labels are transposed before any training starts (the seed's
real fault: loc-token boxes read x-first), and lets correct labels through."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xraydet.data.dataset import label_path_for, load_dataset
from xraydet.plan import PlanError, load_plan, plan_status, run_plan

# Only the data steps matter here: the plan must stop (or pass) before phase 1 would train.
SMALL = [
    "data.synth-main.n_train=16",
    "data.synth-main.n_val=8",
    "data.synth-main.imgsz=128",
    "data.synth-extra.n_train=8",
    "data.synth-extra.n_val=4",
    "data.synth-extra.imgsz=128",
    "data.synth-negatives.n_val=4",
    "data.synth-negatives.imgsz=128",
]


def transposed_copy(src_yaml: Path, dest: Path) -> Path:
    """A copy of a YOLO set with x and y swapped in every label line (cx<->cy, w<->h)."""
    shutil.copytree(src_yaml.parent, dest)
    copy = load_dataset(dest / "data.yaml")
    for image in copy.images("train") + copy.images("val"):
        label = label_path_for(image)
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
        label.write_text("".join(f"{c} {y} {x} {h} {w}\n" for c, x, y, w, h in rows))
    return dest / "data.yaml"


def test_transposed_labels_stop_the_plan_at_the_doctor(
    synth_yaml: Path, tmp_path: Path, xraydet_home: Path
) -> None:
    bad = transposed_copy(synth_yaml, tmp_path / "transposed")
    plan = load_plan("cpu-demo", [*SMALL, f"data.doctor-main.dataset={bad}"])
    with pytest.raises(PlanError, match=r"doctor-main.*transposed"):
        run_plan(plan, tmp_path / "state", base_dir=tmp_path)

    state = plan_status(tmp_path / "state")
    assert state.status == "failed"
    assert state.records["doctor-main"].status == "failed"
    assert "transposed" in (state.records["doctor-main"].error or "")
    assert "phase1" not in state.trail  # no training was started on bad labels
    assert state.records["phase1"].status == "pending" and not state.records["phase1"].outputs


def test_correct_labels_pass_the_doctor(synth_yaml: Path, tmp_path: Path, xraydet_home: Path) -> None:
    from xraydet.data.doctor import doctor

    report = doctor(synth_yaml, "val", max_images=50)
    assert report.verdict == "pass", report.faults
