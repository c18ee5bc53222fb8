"""Reduced-scale CPU ablation of xraydet's X-ray augmentations (``xray_augment``), through ``xraydet train``.

A small stand-in for the GPU ablation (benchmarks/gpu_ablation.yaml) that a 2-core machine can run: yolov8n
from scratch at 256 px on 330 OPIXray training scans (every 6th, the first 330), validated every 3 epochs on
the 350 dev-val scans, 60 epochs, the ``xray-fast`` preset at batch 16 (lr0 0.01). Each setting is one job;
two run at a time, one torch thread each. The data are copied to a temp folder first (Ultralytics writes
label caches beside the labels).

It prints, per setting, the mean of the last three validations and the best one, and writes them with every
validation to ``OUT/summary.json`` and the curves to ``OUT/cpu-ablation.png``. At this scale the models
are far from the plateau where run C overfit (docs/benchmarks/gpu.md), so it measures what the augmentations
cost early learning, not what they give a model that has run out of data.

Usage (about 35 minutes per pair of settings on 2 cores):
    python benchmarks/cpu_ablation.py [--data ../shared/data/opixray/data.yaml] [--out runs/cpu-ablation]
        [--only recipe both] [--epochs 60] [--report-only]

The data-limited variant (a set small enough to be memorised, as run C's 2,000 scans were by yolov8m):
    python benchmarks/cpu_ablation.py --n-train 60 --every 33 --epochs 150 --val-every 5 --only recipe tip \
        --seed 0 --out runs/cpu-ablation-60
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from yolo_subset import copy_subset

SETTINGS = {
    "recipe": {},
    "both": {"rot90": 0.5, "threat_projection": 0.5},
    "rot90": {"rot90": 0.5},
    "tip": {"threat_projection": 0.5},
}


def job(name: str, data: Path, ns: argparse.Namespace) -> dict[str, object]:
    return {
        "name": f"abl-{name}",
        "model": "yolov8n.yaml",
        "data": str(data),
        "preset": "xray-fast",
        "batch": 16,
        "imgsz": 256,
        "epochs": ns.epochs,
        "workers": 1,
        "seed": ns.seed,
        "val_every": ns.val_every,
        "experiment": "xraydet-cpu-ablation",
        "xray_augment": SETTINGS[name],
        "overrides": {"lr0": 0.01, "nbs": 64, "close_mosaic": 6},
        "gate": {"enabled": False},
    }


def start(name: str, data: Path, ns: argparse.Namespace, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Write the setting's job file and start ``xraydet train`` on it in ``ns.out/name``."""
    out = ns.out
    job_file = out / f"job-{name}.yaml"
    job_file.write_text(yaml.safe_dump(job(name, data, ns), sort_keys=False))
    run_dir = out / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "xraydet.cli.main", "train", str(job_file), "--run-dir", str(run_dir)]
    log = (out / f"log-{name}.txt").open("w")
    print(f"started {name}", flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def validations(run_dir: Path) -> list[tuple[int, float, float, float, float]]:
    """(epoch, mAP50, mAP50-95, val box loss, train box loss) of each validated epoch."""
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    return [
        (
            int(float(r["epoch"])),
            float(r["metrics/mAP50(B)"]),
            float(r["metrics/mAP50-95(B)"]),
            float(r["val/box_loss"]),
            float(r["train/box_loss"]),
        )
        for r in rows
        if r["metrics/mAP50(B)"].strip().lower() != "nan"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/opixray/data.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/cpu-ablation"))
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--n-train", type=int, default=330, help="training scans")
    parser.add_argument("--every", type=int, default=6, help="take every Nth training scan")
    parser.add_argument("--val-every", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="summarise the runs already in --out")
    ns = parser.parse_args()
    if ns.report_only:
        report(ns)
        return
    if not ns.data.is_file():
        raise SystemExit(f"{ns.data}: no data set there (pass --data PATH/TO/data.yaml)")
    ns.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "YOLO_OFFLINE": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        train = slice(0, ns.n_train * ns.every, ns.every)
        data = copy_subset(ns.data, Path(tmp) / "data", train=train)
        names = list(ns.only)
        for pair in (names[i : i + 2] for i in range(0, len(names), 2)):
            procs = [start(name, data, ns, env) for name in pair]
            for proc in procs:
                proc.wait()
    report(ns)


def report(ns: argparse.Namespace) -> None:
    """Print the table; write ``summary.json`` and the curves ``cpu-ablation.png`` into ``ns.out``."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "| setting | xray_augment | mAP50, last 3 validations | mAP50-95, last 3 | best mAP50 (epoch) |",
        "|---|---|---|---|---|",
    ]
    out, names = ns.out, ns.only
    summary = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110, sharex=True)
    for name in names:
        points = validations(out / name)
        last, best = points[-3:], max(points, key=lambda p: p[1])
        summary[name] = {
            "xray_augment": SETTINGS[name],
            "map50_last3": round(statistics.mean(p[1] for p in last), 4),
            "map50_95_last3": round(statistics.mean(p[2] for p in last), 4),
            "best_map50": best[1],
            "best_epoch": best[0],
            "validations": [
                {"epoch": e, "map50": m, "map50_95": m95, "val_box_loss": vb, "train_box_loss": tb}
                for e, m, m95, vb, tb in points
            ],
        }
        s = summary[name]
        lines.append(
            f"| {name} | {SETTINGS[name] or 'off'} | {s['map50_last3']:.3f} | {s['map50_95_last3']:.3f} | "
            f"{best[1]:.3f} ({best[0]}) |"
        )
        for ax, i in zip(axes, (1, 2), strict=True):
            ax.plot([p[0] for p in points], [p[i] for p in points], marker="o", markersize=2, label=name)
    for ax, key in zip(axes, ("mAP50", "mAP50-95"), strict=True):
        ax.set(xlabel="epoch", ylabel=f"dev-val {key}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"CPU ablation: yolov8n from scratch, {ns.n_train} OPIXray scans, 256 px, seed {ns.seed}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(out / "cpu-ablation.png")
    plt.close(fig)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
