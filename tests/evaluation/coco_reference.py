"""pycocotools as the independent reference for box AP (used by the cross-check tests)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from xraydet.evaluation.evaluator import Sample


def coco_ap(samples: list[Sample], n_classes: int) -> dict[str, object]:
    """mAP50, mAP75, mAP50-95, per-class AP50 and per-class AP at each IoU threshold (None for classes without
    labels) computed by pycocotools."""
    images, anns, dets = [], [], []
    for i, s in enumerate(samples):
        images.append({"id": i + 1, "width": s.width, "height": s.height})
        for box, c, _ in s.gt:
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        for box, c, score in s.pred:
            dets.append(
                {
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "score": float(score),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c + 1} for c in range(n_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not dets:
            return {
                "map50": 0.0,
                "map75": 0.0,
                "map50_95": 0.0,
                "per_class_ap50": {},
                "per_class_ap_by_iou": {},
            }
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 300]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [T, R, K, A, M]; area "all" = 0, maxDets 300 = 2

    def mean_ap(p: np.ndarray) -> float:
        return float(np.mean(p[p > -1])) if (p > -1).any() else -1.0

    per_class, by_iou = {}, {}
    for k in range(n_classes):
        p = precision[0, :, k, 0, 2]
        per_class[k] = None if (p <= -1).all() else float(np.mean(p))
        by_iou[k] = None if (p <= -1).all() else [float(np.mean(precision[t, :, k, 0, 2])) for t in range(10)]
    assert np.allclose(ev.params.iouThrs[5], 0.75)
    return {
        "map50": mean_ap(precision[0, :, :, 0, 2]),
        "map75": mean_ap(precision[5, :, :, 0, 2]),
        "per_class_ap_by_iou": by_iou,
        "map50_95": mean_ap(precision[:, :, :, 0, 2]),
        "per_class_ap50": per_class,
    }
