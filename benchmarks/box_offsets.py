"""Where a detector's mAP50-95 is lost: how far its boxes sit from the labels, and whether that is systematic.

For every label, the most-overlapping prediction of its class at conf >= 0.25 (IoU > 0.3) is its match. The
script reports the matched boxes' offsets in pixels (centre and each edge: mean, median, standard error) and
the median IoU, then recomputes mAP50 / mAP75 / mAP50-95 with every prediction shifted by a few fixed amounts
along x and y: a shift that raises AP everywhere is a bias between the model and the labels (e.g. labels
drawn a pixel off in one direction, which horizontal flips make unlearnable); random scatter is not
shift-able. Run it on the *train* split too: an offset the model shows on images it trained on is a property
of the labels, and only a train-split estimate may be used to correct anything (the dev val split must stay a
measurement).

Usage::

    python benchmarks/box_offsets.py WEIGHTS ../shared/data/opixray --split val --imgsz 640 \
        --out benchmarks/results/box-offsets-run-e-val.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "true")

from xraydet.data.dataset import load_dataset
from xraydet.evaluation.box_metrics import BoxEvaluator
from xraydet.evaluation.evaluator import DATASET, Sample
from xraydet.evaluation.runner import class_mapping, predict_samples, resolve_predictor, select_images
from xraydet.structures import Detections, box_iou

MATCH_CONF = 0.25
MATCH_IOU = 0.3
EDGES = ("x1", "y1", "x2", "y2")


def matched_offsets(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """Per matched label: ``(pred - label)`` of x1, y1, x2, y2 in pixels, and the match's IoU."""
    offsets, ious = [], []
    for s in samples:
        for c, gt in zip(s.gt.class_id, s.gt.xyxy, strict=True):
            keep = (s.pred.class_id == c) & (s.pred.confidence >= MATCH_CONF)  # type: ignore[operator]
            if not keep.any():
                continue
            cand = s.pred.xyxy[keep]
            iou = box_iou(gt[None], cand)[0]
            best = int(iou.argmax())
            if iou[best] > MATCH_IOU:
                offsets.append(cand[best] - gt)
                ious.append(iou[best])
    return np.array(offsets).reshape(-1, 4), np.array(ious)


def shifted(samples: list[Sample], dx: float, dy: float) -> list[Sample]:
    """The samples with every prediction moved by ``(dx, dy)`` pixels."""
    out = []
    for s in samples:
        xyxy = s.pred.xyxy + np.array([dx, dy, dx, dy])
        out.append(
            Sample(s.image, s.width, s.height, s.gt, Detections(xyxy, s.pred.class_id, s.pred.confidence))
        )
    return out


def box_metrics(samples: list[Sample], names: list[str]) -> dict[str, float]:
    ev = BoxEvaluator(names)
    for s in samples:
        ev.process(s)
    box = ev.evaluate()["box"]
    return {k: round(float(box[k]), 4) for k in ("map50", "map75", "map50_95")}


def stats(values: np.ndarray) -> dict[str, float] | None:
    """Mean, median and standard error (None with fewer than two values: no spread to report)."""
    if len(values) < 2:
        return None
    return {
        "mean": round(float(values.mean()), 3),
        "median": round(float(np.median(values)), 3),
        "sem": round(float(values.std(ddof=1) / np.sqrt(len(values))), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights")
    parser.add_argument("dataset")
    parser.add_argument("--split", default="val")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--shifts", default="0.5,1.0", help="pixel shifts to try, each along +x, -x, +y, -y")
    parser.add_argument("--out", type=Path, required=True)
    ns = parser.parse_args()

    dataset = load_dataset(ns.dataset)
    images = select_images(dataset.images(ns.split), ns.max_images, seed=0)
    predictor = resolve_predictor(ns.weights, imgsz=ns.imgsz)
    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task(f"predicting {len(images)} {ns.split} images", total=len(images))
        samples = list(
            predict_samples(
                predictor,
                dataset,
                [(p, DATASET) for p in images],
                class_mapping(predictor.names, dataset.names),  # the model's ids as the data set's
                progress=lambda i, n: bar.update(task, completed=i),
            )
        )
    offsets, ious = matched_offsets(samples)
    centre = np.c_[(offsets[:, 0] + offsets[:, 2]) / 2, (offsets[:, 1] + offsets[:, 3]) / 2]
    result: dict[str, Any] = {
        "weights": str(ns.weights),
        "split": ns.split,
        "images": len(samples),
        "labels": int(sum(len(s.gt) for s in samples)),
        "matched": len(ious),
        "median_iou": round(float(statistics.median(ious)), 3) if len(ious) else None,
        "centre_dx": stats(centre[:, 0]),
        "centre_dy": stats(centre[:, 1]),
        "edges": {e: stats(offsets[:, i]) for i, e in enumerate(EDGES)},
        "abs_centre_median": [round(float(np.median(np.abs(c))), 3) for c in centre.T] if len(ious) else None,
        "shifts": [],
    }
    amounts = [float(a) for a in ns.shifts.split(",")]
    trials = (
        [(0.0, 0.0)]
        + [(s * a, 0.0) for a in amounts for s in (1, -1)]
        + [(0.0, s * a) for a in amounts for s in (1, -1)]
    )
    for dx, dy in trials:
        result["shifts"].append({"dx": dx, "dy": dy, **box_metrics(shifted(samples, dx, dy), dataset.names)})
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = ns.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(ns.out)
    print(json.dumps({k: v for k, v in result.items() if k != "shifts"}, indent=1))
    print("| shift dx, dy (px) | mAP50 | mAP75 | mAP50-95 |\n|---|---|---|---|")
    for r in result["shifts"]:
        print(
            f"| {r['dx']:+.1f}, {r['dy']:+.1f} | {r['map50']:.3f} | {r['map75']:.3f} | {r['map50_95']:.3f} |"
        )


if __name__ == "__main__":
    main()
