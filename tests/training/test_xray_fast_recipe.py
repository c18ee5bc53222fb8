"""The shipped GPU recipe (preset xray-fast + examples/jobs/xray-fast-gpu.yaml) must keep working on CPU.

Same job file and preset as the GPU measurement, with only what a CPU test cannot afford shrunk: device,
epochs, image size, batch, the RAM cache and the time budget.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from ultralytics import YOLO

from xraydet.training import job_from_dict, run_training
from xraydet.training.presets import load_preset

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "examples" / "jobs" / "xray-fast-gpu.yaml"


def test_xray_fast_preset_has_the_measured_xray_augmentation() -> None:
    args = load_preset("xray-fast").args
    assert args["flipud"] == 0.5 and args["degrees"] == 0.0 and args["shear"] == 0.0
    assert args["hsv_h"] == 0.0 and args["mixup"] == 0.0
    # batch 128 with the learning rate scaled linearly from Ultralytics' 0.01 at 64
    assert (args["batch"], args["nbs"], args["lr0"]) == (128, 128, 0.02)


def test_xray_fast_job_trains_on_cpu(tiny_data: Path, mlflow_home: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(JOB.read_text())
    assert (raw["model"], raw["val_every"]) == ("yolov8s.yaml", 10)  # what the GPU measurement trained
    raw.update(
        data=str(tiny_data), model="yolov8n.yaml", device="cpu", epochs=2, imgsz=128, batch=8, workers=0,
        overrides={"cache": False},
    )
    raw["gate"].update(decision_epoch=1, stop_below=0.0)  # an untrained model must not be stopped here
    job = job_from_dict(raw, where=str(JOB), base_dir=JOB.parent)
    assert job.preset == "xray-fast"
    result = run_training(job, run_dir=tmp_path / "run")
    assert result.status == "completed", result.stop_reason
    assert result.epochs_completed == 2
    assert result.train_args["flipud"] == 0.5 and result.train_args["batch"] == 8
    assert result.verdict("decision_gate").decision in {"continue", "warn"}
    scan = next((tiny_data.parent / "images" / "val").iterdir())
    assert len(YOLO(str(result.best_weights)).predict(str(scan), imgsz=128, verbose=False)) == 1


def test_the_gpu_scripts_recipe_run_trains_exactly_the_shipped_job() -> None:
    """`gpu_reproduce.sh recipe` must measure what users get from the job file and the preset."""
    spec = yaml.safe_load((REPO / "benchmarks" / "gpu_main.yaml").read_text())
    measured = next(j for j in spec["jobs"] if j["name"] == "recipe-s")
    raw = yaml.safe_load(JOB.read_text())
    shipped = {
        **load_preset(raw["preset"]).args,
        **raw["overrides"],
        **{k: raw[k] for k in ("epochs", "imgsz", "workers", "val_every", "save_every")},
    }
    assert measured["model"] == raw["model"]
    assert measured["args"] == shipped
    assert raw["checkpoint_every"] == 0  # the script makes no epochNNN.pt copies either


def test_run_h_and_run_f_are_the_shipped_recipe_with_their_own_budgets() -> None:
    """Run H (`half-time`, the best row) trained the recipe as shipped; run F (`recipe-8min`) had 8 min."""
    main = {j["name"]: j for j in yaml.safe_load((REPO / "benchmarks" / "gpu_main.yaml").read_text())["jobs"]}
    (run_h,) = yaml.safe_load((REPO / "benchmarks" / "gpu_half_time.yaml").read_text())["jobs"]
    assert (run_h["model"], run_h["args"]) == (main["recipe-s"]["model"], main["recipe-s"]["args"])
    assert main["recipe-s-8min"]["args"] == {**main["recipe-s"]["args"], "time": 0.133}
