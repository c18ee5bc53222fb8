"""The GPU measurement scripts (benchmarks/gpu_recipe.py with gpu_main.yaml and gpu_throughput.yaml) keep
working: their --smoke mode runs the same code path on CPU with tiny settings, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_recipe.py"


def run_script(jobs: str, data: Path, out: Path, *only: str) -> dict:
    cmd = [
        sys.executable,
        str(SCRIPT),
        str(REPO / "benchmarks" / jobs),
        "--data",
        str(data),
        "--out",
        str(out),
        "--work",
        str(out.parent / "work"),
    ]
    proc = subprocess.run([*cmd, "--smoke", "--only", *only], capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_main_run_script_returns_timed_summary_and_weights(synth_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_script("gpu_main.yaml", synth_yaml, out, "main-m-b128")
    (job,) = summary["jobs"]
    assert job["name"] == "main-m-b128" and job["model"] == "yolov8m.yaml" and job["epochs"] == 1
    assert len(job["epoch_timing"]) == 1 and job["train_images_per_s"] > 0
    assert 0 <= job["data_wait_frac"] < 1 and job["device"] == "cpu"
    assert [c["epoch"] for c in job["curve"]] == [1]  # the last epoch is always validated
    assert job["checkpoints_written"] == 1
    assert 0.0 <= job["map75"] <= 1.0
    names = yaml.safe_load(synth_yaml.read_text())["names"].values()
    assert sorted(job["per_class_map50_95"]) == sorted(names)
    parts = sorted(out.glob("best.pt.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)  # under the 16 MB result limit
    whole = tmp_path / "best.pt"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    ckpt = torch.load(whole, map_location="cpu", weights_only=False)
    assert ckpt["model"].yaml["yaml_file"].endswith("yolov8m.yaml")
    assert "main-m-b128" in (out / "table.md").read_text()


def test_throughput_profile_runs_jobs_one_after_another(synth_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_script("gpu_throughput.yaml", synth_yaml, out, "plain-n", "s-b128")
    assert [j["name"] for j in summary["jobs"]] == ["plain-n", "s-b128"]
    assert all(j["train_images_per_s"] > 0 for j in summary["jobs"])
    assert not list(out.glob("best.pt.part*"))  # a profile keeps no weights


def test_ablation_jobs_train_on_the_x_ray_augmented_set(synth_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    names = ["abl-s-recipe", "abl-s-rot90-tip", "abl-s-threat-free"]
    summary = run_script("gpu_ablation.yaml", synth_yaml, out, *names)
    jobs = {j["name"]: j for j in summary["jobs"]}
    assert jobs["abl-s-recipe"]["train_dataset"] == "YOLODataset"
    assert jobs["abl-s-rot90-tip"]["train_dataset"] == "XrayDataset"
    assert jobs["abl-s-rot90-tip"]["xray_augment"]["threat_projection"] == 0.5
    assert jobs["abl-s-rot90-tip"]["xray_augment"]["rot90"] == 0.5
    assert jobs["abl-s-threat-free"]["train_dataset"] == "XrayDataset"
    assert jobs["abl-s-threat-free"]["xray_augment"]["threat_free"] == 0.1
    assert not list(out.glob("best.pt.part*"))  # an ablation keeps no weights
    assert sorted(p.name for p in (out / "curves").iterdir()) == [f"{n}.csv" for n in names]


def test_the_pair_ablation_keeps_the_better_jobs_weights(synth_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_script("gpu_ablation_pair.yaml", synth_yaml, out, "pair-s-recipe", "pair-s-xray")
    jobs = {j["name"]: j for j in summary["jobs"]}
    assert jobs["pair-s-recipe"]["train_dataset"] == "YOLODataset"
    assert jobs["pair-s-xray"]["train_dataset"] == "XrayDataset"
    assert jobs["pair-s-xray"]["xray_augment"] == {
        **jobs["pair-s-xray"]["xray_augment"],
        "rot90": 0.5,
        "threat_projection": 0.5,
        "threat_free": 0.1,
    }
    assert all(j["args"]["save_every"] == 10 and j["model"] == "yolov8s.yaml" for j in jobs.values())
    parts = sorted(out.glob("best.pt.part*"))
    assert parts  # the better job's weights come back (a candidate for the best row)
    ckpt = torch.load(_join(parts, tmp_path), map_location="cpu", weights_only=False)
    assert ckpt["model"].yaml["yaml_file"].endswith("yolov8s.yaml")


XRAY_AUGMENT = {"rot90": 0.5, "threat_projection": 0.5, "threat_free": 0.1}  # the pairs' augmented jobs


def job_args(jobs: str) -> dict[str, dict]:
    """Each job's Ultralytics arguments in a benchmarks/ jobs file, by job name."""
    return {j["name"]: j["args"] for j in yaml.safe_load((REPO / "benchmarks" / jobs).read_text())["jobs"]}


def test_the_imgsz_pair_repeats_run_ds_recipe_and_changes_only_the_input_size(
    synth_yaml: Path, tmp_path: Path
) -> None:
    args = job_args("gpu_imgsz_pair.yaml")
    assert args["imgsz-s-416"] == job_args("gpu_ablation_pair.yaml")["pair-s-recipe"]
    assert args["imgsz-s-640"] == {**args["imgsz-s-416"], "imgsz": 640}
    out = tmp_path / "out"
    summary = run_script("gpu_imgsz_pair.yaml", synth_yaml, out, "imgsz-s-416", "imgsz-s-640")
    assert [j["name"] for j in summary["jobs"]] == ["imgsz-s-416", "imgsz-s-640"]
    assert list(out.glob("best.pt.part*"))


def test_the_640_pair_repeats_run_es_winner_and_adds_only_the_x_ray_augmentations(
    synth_yaml: Path, tmp_path: Path
) -> None:
    args = job_args("gpu_xray_pair_640.yaml")
    assert args["pair640-s-recipe"] == job_args("gpu_imgsz_pair.yaml")["imgsz-s-640"]
    assert args["pair640-s-xray"] == {**args["pair640-s-recipe"], **XRAY_AUGMENT}
    out = tmp_path / "out"
    summary = run_script("gpu_xray_pair_640.yaml", synth_yaml, out, "pair640-s-recipe", "pair640-s-xray")
    jobs = {j["name"]: j for j in summary["jobs"]}
    assert jobs["pair640-s-xray"]["train_dataset"] == "XrayDataset"
    assert jobs["pair640-s-recipe"]["train_dataset"] != "XrayDataset"
    assert list(out.glob("best.pt.part*"))


def test_the_capacity_pair_changes_one_thing_each_against_run_es_winner(
    synth_yaml: Path, tmp_path: Path
) -> None:
    spec = yaml.safe_load((REPO / "benchmarks" / "gpu_capacity_pair_640.yaml").read_text())
    recipe = job_args("gpu_imgsz_pair.yaml")["imgsz-s-640"]
    jobs = {j["name"]: j for j in spec["jobs"]}
    assert (jobs["cap-m-640"]["model"], jobs["cap-m-640"]["args"]) == ("yolov8m.yaml", recipe)
    larger_input = {**recipe, "imgsz": 800}
    assert (jobs["cap-s-800"]["model"], jobs["cap-s-800"]["args"]) == ("yolov8s.yaml", larger_input)
    out = tmp_path / "out"
    summary = run_script("gpu_capacity_pair_640.yaml", synth_yaml, out, "cap-m-640", "cap-s-800")
    assert [(j["name"], j["model"]) for j in summary["jobs"]] == [
        ("cap-m-640", "yolov8m.yaml"),
        ("cap-s-800", "yolov8s.yaml"),
    ]
    assert list(out.glob("best.pt.part*"))


def test_the_loader_checks_differ_from_the_recipe_only_in_workers_and_augmentation(
    synth_yaml: Path, tmp_path: Path
) -> None:
    spec = yaml.safe_load((REPO / "benchmarks" / "gpu_loader.yaml").read_text())
    assert spec["sequential"] is True  # each job alone: the loader wait is the job's own
    recipe, *augmented = spec["jobs"]
    assert [j["args"] for j in augmented] == [
        {**recipe["args"], **XRAY_AUGMENT, "workers": workers} for workers in (7, 14)
    ]
    out = tmp_path / "out"
    summary = run_script("gpu_loader.yaml", synth_yaml, out, *(j["name"] for j in spec["jobs"]))
    assert all(0.0 <= j["data_wait_frac"] < 1.0 for j in summary["jobs"])
    assert not list(out.glob("best.pt.part*"))  # throughput only: no weights come back


def test_the_compile_check_compiles_the_recipe_and_changes_nothing_else(
    synth_yaml: Path, tmp_path: Path
) -> None:
    args = job_args("gpu_compile.yaml")
    main = job_args("gpu_main.yaml")
    assert args["cmp-s-compile"] == {**args["cmp-s-recipe"], "compile": True}
    assert main["recipe-s-compile"] == {**main["recipe-s"], "compile": True}
    run_length = {"time", "epochs", "close_mosaic", "val_every"}  # a short profile, not a timed run
    assert {k: v for k, v in args["cmp-s-recipe"].items() if k not in run_length} == {
        k: v for k, v in main["recipe-s"].items() if k not in run_length
    }
    out = tmp_path / "out"
    summary = run_script("gpu_compile.yaml", synth_yaml, out, "cmp-s-recipe", "cmp-s-compile")
    jobs = {j["name"]: j for j in summary["jobs"]}
    assert jobs["cmp-s-compile"]["compiled"] is True  # Ultralytics would go on uncompiled without a compiler
    assert jobs["cmp-s-recipe"]["compiled"] is False
    assert all(len(j["epoch_timing"]) == 2 for j in jobs.values())
    assert not list(out.glob("best.pt.part*"))  # throughput only: no weights come back


def test_the_checkpoint_cost_runs_write_last_pt_every_epoch_or_every_tenth(
    synth_yaml: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = run_script("gpu_save_every.yaml", synth_yaml, out, "se-1-a", "se-10-a")
    jobs = {j["name"]: j for j in summary["jobs"]}
    assert jobs["se-1-a"]["epochs"] == jobs["se-10-a"]["epochs"] == 2
    assert jobs["se-1-a"]["checkpoints_written"] == 2
    assert jobs["se-10-a"]["checkpoints_written"] == 1  # only the last (validated) epoch
    assert not list(out.glob("best.pt.part*"))
    (work,) = (tmp_path / "work").glob("xraydet-gpu-*")  # --work holds the data copy and the runs
    assert {"se-1-a", "se-10-a"} <= {p.name for p in (work / "runs").iterdir()}


def test_the_job_whose_weights_come_back_is_the_one_of_higher_ultralytics_fitness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run D: pair-s-xray has the higher mAP50-95 (0.3594 vs 0.3573), pair-s-recipe the higher fitness
    (0.1 mAP50 + 0.9 mAP50-95: 0.4053 vs 0.4050); the recipe's best.pt is the one to hand back."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_recipe import fitness

    jobs = json.loads((REPO / "benchmarks" / "results" / "gpu-pair-h200.json").read_text())["jobs"]
    assert max(jobs, key=lambda j: j["map50_95"])["name"] == "pair-s-xray"
    assert max(jobs, key=fitness)["name"] == "pair-s-recipe"
    assert fitness({"map50": 0.7981, "map50_95": 0.362}) == pytest.approx(0.40561)  # run C


def _join(parts: list[Path], tmp_path: Path) -> Path:
    whole = tmp_path / "best.pt"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    return whole


def fake_trainer(done: int, epochs: int, **extra: object) -> SimpleNamespace:
    """What the script's callbacks read of an Ultralytics trainer at the end of epoch ``done`` (1-based)."""
    return SimpleNamespace(
        epoch=done - 1,
        epochs=epochs,
        stop=False,
        stopper=SimpleNamespace(possible_stop=False),
        args=SimpleNamespace(val=True, save=True),
        metrics={"metrics/mAP50(B)": 0.5},
        fitness=0.5,
        best_fitness=0.5,
        batch_size=8,
        train_loader=SimpleNamespace(dataset=range(16)),
        **extra,
    )


def test_epoch_clock_validates_and_checkpoints_on_the_job_cadence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script's callbacks decide as xraydet's bridge does: validate every ``val_every`` epochs and the
    last one, write ``last.pt`` every ``save_every`` epochs and at every validated one."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_recipe import EpochClock

    clock = EpochClock(val_every=5, save_every=3)
    decided = []
    for done in range(1, 12):
        trainer = fake_trainer(done, epochs=11)
        clock.on_train_epoch_start(trainer)
        clock.on_train_epoch_end(trainer)
        decided.append((done, trainer.args.val, trainer.args.save))
    # Ultralytics itself validates and saves the last epoch (11) whatever args say
    assert [d for d, val, _ in decided if val] == [5, 10]
    assert [d for d, _, save in decided if save] == [3, 5, 6, 9, 10, 11]


def test_epoch_clock_validates_and_checkpoints_where_the_time_budget_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the bridge: the epoch Ultralytics' ``time`` budget ends the run on is validated (so written), not
    left as an unvalidated, unwritten last epoch."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_recipe import EpochClock

    clock = EpochClock(val_every=5, save_every=5)
    # 4 epochs of ~900 s done, 10 s of the hour left: the next epoch would be cut
    trainer = fake_trainer(4, epochs=300, start_epoch=0, train_time_start=time.time() - 3590)
    trainer.args.time = 1.0
    clock.on_train_epoch_start(trainer)
    clock.on_train_epoch_end(trainer)
    assert (trainer.args.val, trainer.args.save) == (True, True)


def test_epoch_clock_times_the_last_epoch_without_the_final_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ultralytics' final_eval calls ``on_fit_epoch_end`` once more (validating best.pt) after the last epoch:
    that call must not stretch the last epoch's time, as xraydet's bridge ignores it."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from gpu_recipe import EpochClock

    clock = EpochClock()
    trainer = fake_trainer(1, epochs=1)
    clock.on_train_epoch_start(trainer)
    clock.on_train_epoch_end(trainer)
    clock.on_fit_epoch_end(trainer)
    epoch_s = clock.epochs[-1]["epoch_s"]
    time.sleep(0.05)  # final_eval validating best.pt
    clock.on_fit_epoch_end(trainer)
    assert clock.epochs[-1]["epoch_s"] == epoch_s
