"""What the X-ray augmentations cost one data-loader worker: milliseconds per training sample.

Builds Ultralytics' training set (416 px, RAM cache, the ``xray-fast`` preset's augmentation, mosaic on) over
a temp copy of ``--n`` real OPIXray scans (Ultralytics writes a label cache beside the labels, so never the
shared folder), then times ``dataset[i]`` for each setting of ``XrayAugment``. The settings take turns in
``--rounds`` rounds, so a busy machine slows them alike; the table gives each one's median over the rounds and
its ratio to the recipe without them. One worker's images/s is 1000 / ms; a GPU job's loader delivers about
that times its worker count.

Usage:
    python benchmarks/bench_augment.py [--data ../shared/data/opixray/data.yaml] [--n 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from yolo_subset import copy_subset

os.environ.setdefault("YOLO_OFFLINE", "true")

if TYPE_CHECKING:
    from xraydet.training.xray_augment import XrayDataset

SETTINGS = {
    "recipe (no X-ray augmentation)": {},
    "+ rot90 0.5": {"rot90": 0.5},
    "+ threat_projection 0.5": {"threat_projection": 0.5},
    "+ both": {"rot90": 0.5, "threat_projection": 0.5},
    "+ threat_free 0.1": {"threat_free": 0.1},
}


def build_dataset(data_yaml: Path) -> XrayDataset:
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from xraydet.training.presets import load_preset
    from xraydet.training.xray_augment import XrayAugment, as_xray_dataset

    args = {k: v for k, v in load_preset("xray-fast").args.items() if k not in {"batch", "nbs"}}
    cfg = get_cfg(overrides={**args, "imgsz": 416, "cache": "ram"})
    data = check_det_dataset(str(data_yaml))
    dataset = build_yolo_dataset(cfg, data["train"], 16, data, mode="train")  # type: ignore[arg-type]
    return as_xray_dataset(dataset, XrayAugment())  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data/opixray/data.yaml"))
    parser.add_argument("--n", type=int, default=200, help="scans to copy and time")
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    if not ns.data.is_file():
        raise SystemExit(f"{ns.data}: no data set there (pass --data PATH/TO/data.yaml)")
    from xraydet.training.xray_augment import XrayAugment

    with tempfile.TemporaryDirectory() as tmp:
        dataset = build_dataset(copy_subset(ns.data, Path(tmp), train=slice(ns.n), val=slice(4)))
        n = len(dataset)
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for r in range(ns.rounds):
            for name, setting in SETTINGS.items():
                dataset.xray = XrayAugment(**setting)  # type: ignore[arg-type]
                random.seed(r)
                start = time.perf_counter()
                for i in range(n):
                    dataset[i]
                times[name].append((time.perf_counter() - start) / n * 1000)
    base = statistics.median(times["recipe (no X-ray augmentation)"])
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{n} scans, {ns.rounds} rounds, one process, OMP_NUM_THREADS {threads}")
    print("| setting | ms per sample (median) | images/s per worker | vs recipe |")
    print("|---|---|---|---|")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"| {name} | {ms:.1f} | {1000 / ms:.0f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
