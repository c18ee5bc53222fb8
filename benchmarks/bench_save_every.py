"""What writing ``last.pt`` after every epoch costs a training run, measured end to end (``save_every``).

Ultralytics writes ``last.pt`` (the half-precision EMA model plus the optimizer state) after every epoch. The
GPU recipe's run C spent 0.5 s per epoch outside its training loop even without validation (2.16 s per epoch,
1.66 s in the loop), and ``save_every: N`` writes that file only every Nth epoch (and at every validated and
the last one). This trains the GPU recipe's model with the GPU script's own callbacks
(benchmarks/gpu_recipe.py ``EpochClock``), on a tiny synthetic set so that checkpointing is a visible share
of each epoch, with ``save_every`` 1 and 10 in alternating rounds, and prints, per setting, the median over
epochs 2+ of the time per epoch outside the training loop (checkpoints, metrics, scheduler, memory), of the
whole epoch, and the ratio. Validation runs at the last epoch only in both.

It measures the CPU machine it runs on: the GPU machine's disk and serialisation differ
(docs/benchmarks/gpu.md says how the figure transfers).

Usage:
    python benchmarks/bench_save_every.py [--model yolov8m.yaml] [--epochs 12] [--rounds 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "true")

from gpu_recipe import EpochClock  # the benchmarks folder is on sys.path when run as a script


def synthetic_set(root: Path) -> Path:
    """A 16-scan synthetic X-ray set (the project's generator), returned as its data.yaml."""
    from xraydet.data.synth import SynthConfig, generate

    return generate(SynthConfig(n_train=16, n_val=8, imgsz=128, seed=0), root / "synth")


def train_once(model: str, data: Path, out: Path, epochs: int, save_every: int, name: str) -> dict[str, Any]:
    """One training run; the per-epoch timings of its :class:`EpochClock`."""
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"mlflow": False, "tensorboard": False, "wandb": False})
    clock = EpochClock(val_every=epochs, save_every=save_every)
    yolo = YOLO(model)
    clock.attach(yolo)
    sizes: list[int] = []  # each checkpoint as written (Ultralytics strips the optimizer from the last one)
    yolo.add_callback("on_model_save", lambda trainer: sizes.append(Path(trainer.last).stat().st_size))
    started = time.perf_counter()
    yolo.train(
        data=str(data),
        epochs=epochs,
        imgsz=64,
        batch=16,
        workers=0,
        device="cpu",
        project=str(out),
        name=name,
        exist_ok=True,
        plots=False,
        verbose=False,
        amp=False,
        optimizer="SGD",  # the recipe's (examples/jobs/xray-fast-gpu.yaml): one momentum buffer per weight
        lr0=0.02,
        momentum=0.937,
        seed=0,
        deterministic=False,
        val=True,
    )
    rows = clock.epochs[1:]  # the first epoch builds the loader and warms up
    return {
        "save_every": save_every,
        "wall_s": round(time.perf_counter() - started, 2),
        "epochs": len(clock.epochs),
        "outside_loop_s": [round(r["epoch_s"] - r["train_s"], 4) for r in rows if "epoch_s" in r],
        "epoch_s": [round(r["epoch_s"], 4) for r in rows if "epoch_s" in r],
        "checkpoints_written": len(sizes),
        "last_pt_mb": round(max(sizes) / 2**20, 1),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per ``save_every``: medians over every measured epoch of every round (the last, validated, one out)."""
    table: dict[int, dict[str, float]] = {}
    for every in sorted({r["save_every"] for r in runs}):
        mine = [r for r in runs if r["save_every"] == every]
        outside = [v for r in mine for v in r["outside_loop_s"][:-1]]
        epoch = [v for r in mine for v in r["epoch_s"][:-1]]
        table[every] = {
            "outside_loop_s": round(statistics.median(outside), 3),
            # a checkpoint every N epochs is a periodic cost: the mean spreads it over the epochs
            "outside_loop_mean_s": round(statistics.fmean(outside), 3),
            "epoch_s": round(statistics.median(epoch), 3),
            "epoch_mean_s": round(statistics.fmean(epoch), 3),
            "epochs_measured": len(epoch),
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="yolov8m.yaml")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--every", type=int, default=10, help="the save_every compared with 1")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    ns = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_set(Path(tmp))
        for round_index in range(ns.rounds):
            order = (1, ns.every) if round_index % 2 == 0 else (ns.every, 1)
            for every in order:
                runs.append(
                    train_once(
                        ns.model, data, Path(tmp) / "runs", ns.epochs, every, f"r{round_index}-s{every}"
                    )
                )
    table = summarise(runs)
    base, fast = table[1], table[ns.every]
    print(f"{ns.model}, {ns.epochs} epochs x {ns.rounds} rounds, epochs 2..{ns.epochs - 1} of each run:")
    print(
        "| save_every | last.pt written | last.pt MB | outside the loop, s/epoch: median | mean "
        "| whole epoch, s: median | mean |"
    )
    print("|---|---|---|---|---|---|---|")
    for every, row in table.items():
        run = next(r for r in runs if r["save_every"] == every)
        print(
            f"| {every} | {run['checkpoints_written']} of {run['epochs']} epochs | {run['last_pt_mb']} "
            f"| {row['outside_loop_s']:.3f} | {row['outside_loop_mean_s']:.3f} "
            f"| {row['epoch_s']:.3f} | {row['epoch_mean_s']:.3f} |"
        )
    saved = base["outside_loop_mean_s"] - fast["outside_loop_mean_s"]
    print(
        f"save_every {ns.every} saves {saved:.3f} s per epoch on average here: "
        f"epochs {base['epoch_mean_s'] / fast['epoch_mean_s']:.2f}x as fast"
    )
    if ns.out is not None:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps({"model": ns.model, "runs": runs, "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
