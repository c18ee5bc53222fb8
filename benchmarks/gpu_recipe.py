"""Train configurations on one GPU and tabulate time-to-accuracy and throughput (issue 7).

Every job trains from a model YAML (no pretrained weights) on a private copy of the data set, so nothing is
written next to the source data. By default the jobs of a YAML file run concurrently as separate processes
sharing the GPU and the CPU cores; with ``sequential: true`` they run one after another in this process, each
alone on the machine (the throughput profile and the main run). Each job records its wall time, images/s over
the whole run, the training loop's images/s and the share of it spent waiting for the loader (medians over
epochs 2+, :class:`EpochClock`), and a final validation of ``best.pt``. A job's ``val_every: N`` validates
every N epochs only, ``save_every: N`` writes ``last.pt`` every N epochs only, and ``rot90`` /
``threat_projection`` / ``threat_free`` (probabilities) switch on xraydet's X-ray augmentations, as the
xraydet job keys ``val_every``, ``save_every`` and ``xray_augment`` do.

The GPU machine has no pydantic or MLflow, so this script drives Ultralytics directly instead of ``xraydet
train``; the recipe it measures is the same (preset ``xray-fast``, examples/jobs/xray-fast-gpu.yaml).

Usage (GPU machine, after ``source .gpu/env.sh``; or ``bash benchmarks/gpu_reproduce.sh``)::

    python benchmarks/gpu_recipe.py benchmarks/gpu_main.yaml --data .gpu/data/opixray/data.yaml --out $OUT \
        --only main-m-b128

CPU smoke test of the exact same code path (tiny settings)::

    python benchmarks/gpu_recipe.py benchmarks/gpu_main.yaml --data ../shared/data/opixray/data.yaml \
        --out /tmp/gpu-smoke --smoke --only main-m-b128
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from yolo_subset import copy_subset

os.environ.setdefault("YOLO_OFFLINE", "true")


def load_xraydet_module(name: str) -> Any:
    """A module of ``xraydet.training`` that needs only what the GPU machine has (the stdlib, numpy,
    Ultralytics, and xraydet's numpy-only core: the package root and ``xraydet.structures``), loaded from its
    file: that machine lacks the package's other dependencies (pydantic, MLflow), so ``import
    xraydet.training...`` would fail there."""
    if f"xraydet_{name}" in sys.modules:
        return sys.modules[f"xraydet_{name}"]
    src = Path(__file__).resolve().parents[1] / "src"
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    path = src / "xraydet" / "training" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"xraydet_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


class EpochClock:
    """Ultralytics callbacks that time each epoch's training loop, its data waits and its validation.

    The loop timing is xraydet's ``LoopClock`` (``data_wait_s``: the time the training loop sat waiting for
    the loader). ``val_every`` validates only every N epochs (and always at the last one, which Ultralytics
    forces, and the one Ultralytics' ``time`` budget ends the run on), so a short run does not spend a quarter
    of its time validating; ``save_every`` writes ``last.pt`` only every N epochs (and at every validated and
    the last epoch), as the xraydet job key does. As in xraydet's bridge, Ultralytics' NaN recovery may not go
    on from a ``last.pt`` older than the epoch before: the job fails instead of silently losing epochs.
    """

    def __init__(self, val_every: int = 1, save_every: int = 1) -> None:
        self.val_every = max(int(val_every), 1)
        self.save_every = max(int(save_every), 1)
        self.epochs: list[dict[str, float]] = []
        self.loop = load_xraydet_module("throughput").LoopClock()
        cadence = load_xraydet_module("validation_cadence")
        self.skip_validation, self.save_due = cadence.skip_validation, cadence.save_due
        self.time_budget_ends, self.guard_nan_recovery = cadence.time_budget_ends, cadence.guard_nan_recovery
        self._epoch_start = 0.0
        self.saved_epochs: list[int] = []  # epochs whose last.pt was written
        self.compiled = False  # whether torch.compile wrapped the model (Ultralytics falls back silently)

    def attach(self, model: Any) -> None:
        for event in (
            "on_pretrain_routine_end",
            "on_train_epoch_start",
            "on_train_batch_start",
            "on_train_batch_end",
            "on_train_epoch_end",
            "on_model_save",
            "on_fit_epoch_end",
        ):
            model.add_callback(event, getattr(self, event))

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        self.compiled = hasattr(trainer.model, "_orig_mod")  # torch.compile's OptimizedModule
        self.guard_nan_recovery(trainer, lambda: self.saved_epochs[-1] if self.saved_epochs else None)

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._epoch_start = time.perf_counter()
        self.loop.epoch_start()

    def on_train_batch_start(self, trainer: Any) -> None:
        self.loop.batch_start()

    def on_train_batch_end(self, trainer: Any) -> None:
        self.loop.batch_end()

    def on_train_epoch_end(self, trainer: Any) -> None:
        self.loop.epoch_end(trainer.batch_size, len(trainer.train_loader.dataset))
        self.epochs.append(
            {
                "epoch": trainer.epoch + 1,
                "train_s": self.loop.loop_s,
                "data_wait_s": self.loop.wait_s,
                "images": self.loop.images,
            }
        )
        trainer.args.val = (trainer.epoch + 1) % self.val_every == 0 or self.time_budget_ends(trainer)
        if not trainer.args.val:  # as xraydet's bridge: no stale metrics, no best.pt from unvalidated weights
            self.skip_validation(trainer)
        trainer.args.save = self.save_due(trainer, self.save_every, trainer.args.val)

    def on_model_save(self, trainer: Any) -> None:
        self.saved_epochs.append(trainer.epoch + 1)

    def on_fit_epoch_end(self, trainer: Any) -> None:
        # not again for final_eval's extra call (best.pt's validation), as xraydet's bridge
        if self.epochs and "epoch_s" not in self.epochs[-1]:
            self.epochs[-1]["epoch_s"] = time.perf_counter() - self._epoch_start

    def steady(self) -> dict[str, float | None]:
        """Median throughput over epochs after the first (warm-up, cuDNN autotune, loader start)."""
        rows = self.epochs[1:] or self.epochs
        if not rows:
            return {"train_images_per_s": None, "epoch_images_per_s": None, "data_wait_frac": None}
        train = statistics.median(r["images"] / r["train_s"] for r in rows)
        full = statistics.median(r["images"] / r.get("epoch_s", r["train_s"]) for r in rows)
        wait = statistics.median(r["data_wait_s"] / r["train_s"] for r in rows)
        return {
            "train_images_per_s": round(train, 1),
            "epoch_images_per_s": round(full, 1),
            "data_wait_frac": round(wait, 3),
        }


def run_one(job: dict[str, Any], data: Path, out: Path, device: str) -> dict[str, Any]:
    """Train one job in this process and return (and write) its summary."""
    import torch
    from ultralytics import YOLO
    from ultralytics.engine import trainer as trainer_mod
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"mlflow": False, "tensorboard": False, "wandb": False})
    # Offline, Ultralytics' AMP self-test would try to download a checkpoint; AMP is sound on Hopper.
    trainer_mod.check_amp = lambda model: torch.cuda.is_available()
    args: dict[str, Any] = dict(job.get("args", {}))
    val_every = int(args.pop("val_every", 1))
    save_every = int(args.pop("save_every", 1))
    xray = load_xraydet_module("xray_augment")
    augment = xray.XrayAugment(
        rot90=float(args.pop("rot90", 0.0)),
        threat_projection=float(args.pop("threat_projection", 0.0)),
        threat_free=float(args.pop("threat_free", 0.0)),
    )
    args.update(
        data=str(data),
        device=device,
        project=str(out),
        name=job["name"],
        exist_ok=True,
        plots=False,
        verbose=False,
        seed=int(job.get("seed", 0)),
        deterministic=False,
        val=True,
    )
    clock = EpochClock(val_every, save_every)
    started = time.time()
    model = YOLO(job["model"])
    clock.attach(model)
    trainer = xray.xray_trainer(augment) if augment.active else None
    model.train(trainer=trainer, **args)
    wall = time.time() - started
    run_dir = out / job["name"]
    best = run_dir / "weights" / "best.pt"
    metrics = YOLO(str(best)).val(
        data=str(data),
        imgsz=args.get("imgsz", 640),
        batch=32,
        device=device,
        plots=False,
        verbose=False,
        project=str(out / "val"),
        name=job["name"],
        exist_ok=True,
    )
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    epochs = len(rows)
    train_time = float(rows[-1]["time"]) if rows else wall
    summary = {
        "name": job["name"],
        "model": job["model"],
        "args": job.get("args", {}),
        "epochs": epochs,
        "wall_s": round(wall, 1),
        "train_s": round(train_time, 1),
        # images actually trained (an epoch cut by the time budget counts what it trained) per training second
        "images_per_s": round(sum(e["images"] for e in clock.epochs) / train_time, 1) if train_time else None,
        "map50": round(float(metrics.box.map50), 4),
        "map50_95": round(float(metrics.box.map), 4),
        "map75": round(float(metrics.box.map75), 4),  # where mAP50-95 is lost: box tightness
        # each class's AP50-95 (Ultralytics' `maps` holds the mean for a class without labels)
        "per_class_map50_95": {
            metrics.names[i]: round(float(v), 4) for i, v in enumerate(metrics.box.maps)
        },
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "train_dataset": type(model.trainer.train_loader.dataset).__name__,  # XrayDataset: X-ray augmented
        "xray_augment": dataclasses.asdict(augment),
        **clock.steady(),
        "checkpoints_written": len(clock.saved_epochs),
        "compiled": clock.compiled,
        "epoch_timing": clock.epochs,
        "curve": [
            {
                "epoch": int(float(r["epoch"])),
                "time": float(r["time"]),
                "map50": float(r["metrics/mAP50(B)"]),
                "map50_95": float(r["metrics/mAP50-95(B)"]),
            }
            for r in rows
            if r["metrics/mAP50(B)"].strip().lower() != "nan"  # epochs that were validated
        ],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_concurrently(
    jobs: list[dict[str, Any]], ns: argparse.Namespace, data: Path, work: Path, device: str
) -> None:
    """Start every job as its own process on the same GPU and wait for all of them.

    While they run, each job's results.csv is copied to ``ns.out/curves/`` every 20 s, so a call cut off by
    the GPU machine's time limit still brings back every validated epoch so far.
    """
    procs = {}
    for job in jobs:
        log = (work / "runs" / f"{job['name']}.log").open("w")
        cmd = [
            sys.executable,
            __file__,
            str(ns.jobs),
            "--data",
            str(ns.data),
            "--out",
            str(work / "runs"),
            "--device",
            device,
            "--one",
            job["name"],
            "--prepared",
            str(data),
        ]
        if ns.smoke:
            cmd.append("--smoke")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs[job["name"]] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        print(f"started {job['name']}", flush=True)
    curves = ns.out / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    while any(proc.poll() is None for proc in procs.values()):
        time.sleep(20)
        for name in procs:
            results = work / "runs" / name / "results.csv"
            if results.is_file():
                shutil.copyfile(results, curves / f"{name}.csv")
    for name, proc in procs.items():
        print(f"{name} exited {proc.wait()}", flush=True)
        results = work / "runs" / name / "results.csv"
        if results.is_file():
            shutil.copyfile(results, curves / f"{name}.csv")


def at_time(curve: list[dict[str, float]], t: float) -> float | None:
    """Val mAP50 of the last epoch finished by wall time ``t`` (None if none had)."""
    done = [p["map50"] for p in curve if p["time"] <= t]
    return done[-1] if done else None


def fitness(summary: dict[str, Any]) -> float:
    """Ultralytics' own fitness of a job's final validation (0.1 mAP50 + 0.9 mAP50-95), the measure its
    ``best.pt`` is chosen by, and the one that picks which job's ``best.pt`` comes back."""
    return 0.1 * summary["map50"] + 0.9 * summary["map50_95"]


def table(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| job | model | epochs | train s | images/s | loop images/s | data wait | val mAP50 | val mAP75 "
        "| val mAP50-95 | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['name']} | {s['model']} | {s['epochs']} | {s['train_s']} | {s['images_per_s']} | "
            f"{s.get('train_images_per_s')} | {s.get('data_wait_frac')} | "
            f"{s['map50']:.3f} | {s.get('map75', float('nan')):.3f} | {s['map50_95']:.3f} | {s['device']} |"
        )
    return "\n".join(lines)


def write_report(
    jobs: list[dict[str, Any]], spec: dict[str, Any], work: Path, out: Path
) -> list[dict[str, Any]]:
    """Collect the finished jobs' summaries into ``out``/summary.json and table.md (rewritten as jobs end)."""
    summaries = []
    for job in jobs:
        path = work / "runs" / job["name"] / "summary.json"
        if path.exists():
            summaries.append(json.loads(path.read_text()))
    report = {"jobs": summaries}
    pairs = spec.get("compare_equal_time", [])
    for a, b in pairs:
        sa = next((s for s in summaries if s["name"] == a), None)
        sb = next((s for s in summaries if s["name"] == b), None)
        if sa and sb:
            t = min(sa["curve"][-1]["time"], sb["curve"][-1]["time"])
            report.setdefault("equal_time", []).append(
                {
                    "a": a,
                    "b": b,
                    "t_s": t,
                    "map50_a": at_time(sa["curve"], t),
                    "map50_b": at_time(sb["curve"], t),
                }
            )
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    (out / "table.md").write_text(table(summaries) + "\n")
    print(table(summaries))
    print(json.dumps(report.get("equal_time", []), indent=2))
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("jobs", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of the same code path")
    parser.add_argument("--only", nargs="*", help="run only these job names")
    parser.add_argument(
        "--work",
        type=Path,
        help="folder for the private data copy and every job's run (default: a new temporary folder, kept, "
        "so that each job's weights stay on the machine after the call)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    spec = yaml.safe_load(ns.jobs.read_text())
    jobs = [j for j in spec["jobs"] if not ns.only or j["name"] in ns.only]
    device = ns.device or ("0" if not ns.smoke else "cpu")
    if ns.one:
        job = next(j for j in jobs if j["name"] == ns.one)
        if ns.smoke:
            job = {**job, "args": {**job.get("args", {}), **spec.get("smoke", {})}}
        run_one(job, ns.prepared, ns.out, device)
        return
    ns.out.mkdir(parents=True, exist_ok=True)
    if ns.work:
        ns.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xraydet-gpu-", dir=ns.work))
    # A private copy: Ultralytics writes label caches beside the labels.
    part = {"train": slice(32), "val": slice(16)} if ns.smoke else {}
    data = copy_subset(ns.data, work / "data", **part)
    print(f"data copied to {data}", flush=True)
    (work / "runs").mkdir(parents=True, exist_ok=True)
    if spec.get("sequential"):
        # Throughput profile: one job at a time in this process (no per-job interpreter start-up).
        os.environ["OMP_NUM_THREADS"] = "1"
        for job in jobs:
            if ns.smoke:
                job = {**job, "args": {**job.get("args", {}), **spec.get("smoke", {})}}
            run_one(job, data, work / "runs", device)
            write_report(jobs, spec, work, ns.out)  # partial results survive a time-out
            print(f"{job['name']} done", flush=True)
    else:
        run_concurrently(jobs, ns, data, work, device)
    summaries = write_report(jobs, spec, work, ns.out)
    best = max(summaries, key=fitness, default=None)
    if best and spec.get("keep_weights", True):
        weights = work / "runs" / best["name"] / "weights" / "best.pt"
        # Result files come back at most 16 MB each: split larger weights (cat best.pt.part* > best.pt).
        subprocess.run(["split", "-b", "15M", "-d", str(weights), str(ns.out / "best.pt.part")], check=True)
        print(f"best: {best['name']} mAP50 {best['map50']} mAP50-95 {best['map50_95']}")
    logs = ns.out / "logs.tar.gz"
    subprocess.run(
        ["tar", "czf", str(logs), "--exclude=*.pt", "--exclude=*.cache", "-C", str(work / "runs"), "."],
        check=False,
    )


if __name__ == "__main__":
    main()
