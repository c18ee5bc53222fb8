"""Plot the GPU time-to-accuracy curves and the throughput profile from benchmarks/results/*.json.

python benchmarks/plot_gpu.py   # writes docs/benchmarks/gpu-*.png: curves, throughput, and runs by epoch
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from xraydet.training.history import is_validated, read_results_csv

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCS = REPO / "docs" / "benchmarks"
CURVES = [  # (file, job, label)
    ("gpu-half-time-h200.json", "recipe-s-4min", "yolov8s, batch 128, imgsz 640, alone, 4.2 min: run H"),
    ("gpu-capacity-h200.json", "cap-m-640", "yolov8m, batch 128, imgsz 640, 2 jobs sharing (H200)"),
    ("gpu-capacity-h200.json", "cap-s-800", "yolov8s, batch 128, imgsz 800, 2 jobs sharing (H200)"),
    ("gpu-recipe-h200.json", "recipe-s", "yolov8s, batch 128, imgsz 640, alone, 8 min: run F"),
    ("gpu-imgsz-h200.json", "imgsz-s-640", "yolov8s, batch 128, imgsz 640, 2 jobs sharing (H200)"),
    ("gpu-imgsz-h200.json", "imgsz-s-416", "yolov8s, batch 128, 2 jobs sharing (H200), run D repeated"),
    ("gpu-main-h100.json", "main-m-b128", "yolov8m, batch 128, alone (H100)"),
    ("gpu-pair-h200.json", "pair-s-recipe", "yolov8s, batch 128, 2 jobs sharing (H200)"),
    ("gpu-pair-h200.json", "pair-s-xray", "yolov8s, batch 128, + X-ray augmentations, 2 jobs sharing (H200)"),
    ("gpu-solo-h200.json", "fast-s-xray-solo", "yolov8s, batch 64, alone (H200)"),
    ("gpu-6up-h200.json", "fast-s-xray", "yolov8s, batch 64, 6 jobs sharing (H200)"),
    ("gpu-6up-h200.json", "baseline", "seed baseline preset, 6 jobs sharing (H200)"),
]


def job(file: str, name: str) -> dict:
    return next(j for j in json.loads((RESULTS / file).read_text())["jobs"] if j["name"] == name)


def plot_curves(path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), dpi=110, sharex=True)
    tab20 = plt.get_cmap("tab20")  # 20 distinct colours: the default cycle repeats after 10 curves
    colours = [tab20(i) for i in range(0, 20, 2)] + [tab20(i) for i in range(1, 20, 2)]
    for (file, name, label), colour in zip(CURVES, colours, strict=False):
        curve = job(file, name)["curve"]
        minutes = [p["time"] / 60 for p in curve]
        for ax, key in zip(axes, ("map50", "map50_95"), strict=True):
            ax.plot(minutes, [p[key] for p in curve], marker="o", markersize=2, label=label, color=colour)
    for ax, key, target in zip(axes, ("mAP50", "mAP50-95"), (0.87, 0.45), strict=True):
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"issue 7 target {target}", (0.2, target + 0.01), color="grey", fontsize=8)
        ax.axvline(9, color="grey", linestyle=":", linewidth=1)
        top = 1.0 if key == "mAP50" else 0.5
        ax.set(xlabel="training time (min)", ylabel=f"dev-val {key}", ylim=(0, top))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2, frameon=False)
    fig.suptitle("OPIXray dev set, from scratch, imgsz 416 unless noted: validation in training", fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_by_epoch(
    path: Path, jobs: tuple[tuple[str, str, str], ...], title: str, by_time: bool = False
) -> Path:
    """Jobs by epoch (or minutes): mAP50-95 and validation box loss, one line per ``(folder, job, label)``.

    Read from each job's results.csv (``benchmarks/results/<folder>/<job>.csv``), which has the losses too.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), dpi=110, sharex=True)
    for folder, name, label in jobs:
        rows = [r for r in read_results_csv(RESULTS / folder / f"{name}.csv") if is_validated(r)]
        xs = [r["time_s"] / 60 if by_time else r["epoch"] for r in rows]
        for ax, key in zip(axes, ("map50_95", "val_box_loss"), strict=True):
            ax.plot(xs, [r[key] for r in rows], marker="o", markersize=3, label=label)
    xlabel = "training time (min)" if by_time else "epoch"
    axes[0].set(xlabel=xlabel, ylabel="dev-val mAP50-95", ylim=(0, 0.45))
    axes[1].set(xlabel=xlabel, ylabel="dev-val box loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def loop_images_per_s(job: dict, n_train: int = 2000) -> float:
    """Median training-loop images/s over epochs 2+, counting at most ``n_train`` images an epoch.

    The script version that produced the 2026-11-26 files counted batches x batch size (2,048 for a partial
    last batch); capping at the set's size gives the images really trained.
    """
    rows = job["epoch_timing"][1:] or job["epoch_timing"]
    return statistics.median(min(r["images"], n_train) / r["train_s"] for r in rows)


def plot_throughput(path: Path) -> Path:
    jobs = json.loads((RESULTS / "gpu-throughput-h100.json").read_text())["jobs"]
    names = [j["name"] for j in jobs]
    loop = [loop_images_per_s(j) for j in jobs]
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    bars = ax.barh(names, loop, color=["#999" if n.startswith("plain") else "#3a7" for n in names])
    ax.bar_label(bars, fmt="%.0f", fontsize=8, padding=2)
    ax.invert_yaxis()
    ax.set(xlabel="training-loop images/s (median of epochs 2-3)", title="Each job alone on one H100")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(plot_curves(DOCS / "gpu-curves.png"))
    print(plot_throughput(DOCS / "gpu-throughput.png"))
    same_budget = "2 jobs sharing one H200 for 7.5 min each: the same budget, different epoch counts"
    print(
        plot_by_epoch(
            DOCS / "gpu-pair-epochs.png",
            (
                ("gpu-pair-h200", "pair-s-recipe", "recipe"),
                ("gpu-pair-h200", "pair-s-xray", "recipe + X-ray augmentations"),
            ),
            f"Run D, yolov8s, {same_budget}",
        )
    )
    print(
        plot_by_epoch(
            DOCS / "gpu-imgsz-epochs.png",
            (
                ("gpu-imgsz-h200", "imgsz-s-416", "recipe, imgsz 416"),
                ("gpu-imgsz-h200", "imgsz-s-640", "recipe, imgsz 640"),
            ),
            f"Run E, yolov8s, {same_budget}",
        )
    )
    print(
        plot_by_epoch(
            DOCS / "gpu-alone-epochs.png",
            (
                ("gpu-imgsz-h200", "imgsz-s-640", "run E: sharing the H200, 7.5 min, 143 epochs"),
                ("gpu-recipe-h200", "recipe-s", "run F: alone on the H200, 8 min, 219 epochs"),
            ),
            "yolov8s at imgsz 640, the same recipe: half a card vs the whole card",
        )
    )
    print(
        plot_by_epoch(
            DOCS / "gpu-budget-epochs.png",
            (
                ("gpu-half-time-h200", "recipe-s-4min", "run H: the recipe alone, 4.2 min, 114 epochs"),
                ("gpu-recipe-h200", "recipe-s", "run F: the recipe alone, 8 min, 219 epochs"),
                ("gpu-capacity-h200", "cap-m-640", "run G: yolov8m at 640, sharing, 7.5 min, 84 epochs"),
                ("gpu-capacity-h200", "cap-s-800", "run G: yolov8s at 800, sharing, 7.5 min, 72 epochs"),
            ),
            "The time past the plateau: the recipe's budget halved (run H), a bigger model or input (run G)",
            by_time=True,
        )
    )
