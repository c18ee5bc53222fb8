"""Box metrics the COCO way: mAP50, mAP75, mAP50-95 (101-point interpolation), per-class AP at each IoU
threshold, P/R at a threshold.

mAP ranks *all* predictions kept at the low evaluation confidence (0.001). Computing it only from boxes above
the operating threshold truncates the precision-recall curve and understates AP (a known Ultralytics
pitfall), so precision and recall at the operating threshold are reported separately.

Matching follows pycocotools' ``evaluateImg``: per image and class, detections in descending score order each
take the unmatched ground-truth box of highest IoU at or above the threshold. The tests check the numbers
against pycocotools itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xraydet.evaluation.evaluator import DatasetEvaluator, Sample
from xraydet.structures import Detections, box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
CONFUSION_IOU = 0.5


def iou_index(iou: float, thresholds: np.ndarray | list[float] = IOU_THRESHOLDS) -> int:
    """Position of the IoU threshold ``iou`` in ``thresholds`` (compared to 1e-6: they are float steps).

    Example:
        >>> iou_index(0.5), iou_index(0.75), iou_index(0.9)
        (0, 5, 8)
    """
    hits = np.flatnonzero(np.isclose(np.asarray(thresholds, dtype=float), iou, rtol=0.0, atol=1e-6))
    if not len(hits):
        raise ValueError(f"IoU threshold {iou} is not one of {[round(float(t), 2) for t in thresholds]}")
    return int(hits[0])


def match_class(
    gt_boxes: np.ndarray,
    pred_boxes: np.ndarray,
    scores: np.ndarray,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """True-positive flags of one image's detections of one class, shape ``(len(iou_thresholds), n_pred)``.

    The flags are in the order of ``scores`` as given (not sorted).

    Example:
        >>> match_class(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [0, 0, 10, 10]]),
        ...             np.array([0.5, 0.9]), np.array([0.5])).tolist()
        [[False, True]]
    """
    n_pred = len(pred_boxes)
    tp = np.zeros((len(iou_thresholds), n_pred), dtype=bool)
    if n_pred == 0 or len(gt_boxes) == 0:
        return tp
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    ious = box_iou(pred_boxes, gt_boxes)
    for t, threshold in enumerate(iou_thresholds):
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in order:
            best, best_iou = -1, min(float(threshold), 1 - 1e-10)
            for g in range(len(gt_boxes)):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
                tp[t, d] = True
    return tp


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """COCO 101-point AP per IoU threshold from pooled detections of one class.

    Args:
        tp: ``(T, N)`` true-positive flags of all detections of the class over all images.
        scores: ``(N,)`` their confidences (ties keep the given order, as pycocotools' mergesort does).
        n_gt: number of ground-truth boxes of the class; must be > 0.

    Returns:
        ``(ap, precision)``: ``ap`` of shape ``(T,)`` and the interpolated precision at the 101 recall points,
        shape ``(T, 101)``.

    Example:
        >>> ap, _ = average_precision(np.array([[True, False]]), np.array([0.9, 0.8]), n_gt=1)
        >>> round(float(ap[0]), 6)
        1.0
    """
    tp = np.asarray(tp, dtype=bool)
    tp = tp.reshape(len(tp) if tp.ndim > 1 else 1, len(scores))
    precision = np.zeros((tp.shape[0], len(RECALL_POINTS)))
    if len(scores) == 0:
        return precision.mean(axis=1), precision
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    tp = tp[:, order]
    tps = np.cumsum(tp, axis=1, dtype=np.float64)
    fps = np.cumsum(~tp, axis=1, dtype=np.float64)
    for t in range(tp.shape[0]):
        recall = tps[t] / n_gt
        prec = tps[t] / (tps[t] + fps[t] + np.spacing(1))
        prec = np.maximum.accumulate(prec[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        ok = idx < len(prec)
        precision[t, ok] = prec[idx[ok]]
    return precision.mean(axis=1), precision


def confusion_update(
    matrix: np.ndarray, gt: Detections, pred: Detections, iou: float = CONFUSION_IOU
) -> None:
    """Add one image to a ``(nc+1, nc+1)`` confusion matrix: rows = true class, columns = predicted class.

    The last row/column is "background": a missed label counts in ``[true, background]``, a box on nothing in
    ``[background, predicted]``. Predictions and labels pair up greedily by IoU (>= ``iou``), class-agnostic.
    """
    background = matrix.shape[0] - 1
    ious = box_iou(gt.xyxy, pred.xyxy)
    pairs = np.argwhere(ious >= iou)
    pairs = pairs[np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="mergesort")] if len(pairs) else pairs
    used_gt: set[int] = set()
    used_pred: set[int] = set()
    for g, p in pairs:
        if g in used_gt or p in used_pred:
            continue
        used_gt.add(int(g))
        used_pred.add(int(p))
        matrix[gt.class_id[g], pred.class_id[p]] += 1
    for g in set(range(len(gt))) - used_gt:
        matrix[gt.class_id[g], background] += 1
    for p in set(range(len(pred))) - used_pred:
        matrix[background, pred.class_id[p]] += 1


def _mean(values: list[float]) -> float | None:
    """The mean, or None with nothing to average: no labelled class means not measured, not 0."""
    return float(np.mean(values)) if values else None


class BoxEvaluator(DatasetEvaluator):
    """Task ``box``: COCO-style AP over all low-confidence predictions, P/R and confusion at ``conf``.

    Only images of the evaluated split count (threat-free folders from another scanner feed the screening
    metrics, not mAP). Classes without any label in the evaluated images have AP ``None`` and are left out of
    the means, as in pycocotools.
    """

    def __init__(self, names: list[str], conf: float = 0.25) -> None:
        self.names = list(names)
        self.conf = conf
        self.reset()

    def reset(self) -> None:
        nc = len(self.names)
        self._tp: list[list[np.ndarray]] = [[] for _ in range(nc)]
        self._scores: list[list[np.ndarray]] = [[] for _ in range(nc)]
        self._n_gt = np.zeros(nc, dtype=np.int64)
        self._confusion = np.zeros((nc + 1, nc + 1), dtype=np.int64)
        self._n_images = 0

    def process(self, sample: Sample) -> None:
        if sample.is_negative:
            return
        self._n_images += 1
        gt, pred = sample.gt, sample.pred
        scores_all = pred.confidence if pred.confidence is not None else np.ones(len(pred))
        for c in range(len(self.names)):
            g = gt.class_id == c
            p = pred.class_id == c
            self._n_gt[c] += int(g.sum())
            if p.any():
                self._scores[c].append(scores_all[p])
                self._tp[c].append(match_class(gt.xyxy[g], pred.xyxy[p], scores_all[p]))
        confusion_update(self._confusion, gt, pred.with_min_confidence(self.conf))

    def evaluate(self) -> dict[str, dict[str, Any]]:
        ap50: dict[str, float | None] = {}
        ap75: dict[str, float | None] = {}
        ap50_95: dict[str, float | None] = {}
        ap_by_iou: dict[str, list[float] | None] = {}
        prec: dict[str, float | None] = {}
        rec: dict[str, float | None] = {}
        curves: dict[str, list[float]] = {}
        for c, name in enumerate(self.names):
            scores = np.concatenate(self._scores[c]) if self._scores[c] else np.zeros(0)
            tp = (
                np.concatenate(self._tp[c], axis=1)
                if self._tp[c]
                else np.zeros((len(IOU_THRESHOLDS), 0), bool)
            )
            above = scores >= self.conf
            n_above, n_tp = int(above.sum()), int(tp[0, above].sum())
            prec[name] = n_tp / n_above if n_above else (None if self._n_gt[c] == 0 else 0.0)
            if self._n_gt[c] == 0:
                ap50[name] = ap75[name] = ap50_95[name] = ap_by_iou[name] = rec[name] = None
                continue
            ap, curve = average_precision(tp, scores, int(self._n_gt[c]))
            ap50[name], ap50_95[name] = float(ap[0]), float(ap.mean())
            ap75[name] = float(ap[iou_index(0.75)])
            ap_by_iou[name] = [round(float(v), 6) for v in ap]
            rec[name] = n_tp / int(self._n_gt[c])
            curves[name] = [round(float(v), 6) for v in curve[0]]
        labelled = [n for c, n in enumerate(self.names) if self._n_gt[c] > 0]
        return {
            "box": {
                "map50": _mean([ap50[n] for n in labelled]),  # type: ignore[misc]
                "map75": _mean([ap75[n] for n in labelled]),  # type: ignore[misc]
                "map50_95": _mean([ap50_95[n] for n in labelled]),  # type: ignore[misc]
                "per_class_ap50": ap50,
                "per_class_ap50_95": ap50_95,
                "per_class_ap_by_iou": ap_by_iou,
                "iou_thresholds": [round(float(t), 2) for t in IOU_THRESHOLDS],
                "precision": _mean([prec[n] for n in labelled]),  # type: ignore[misc]
                "recall": _mean([rec[n] for n in labelled]),  # type: ignore[misc]
                "per_class_precision": prec,
                "per_class_recall": rec,
                "per_class_labels": {n: int(self._n_gt[c]) for c, n in enumerate(self.names)},
                "n_images": self._n_images,
                "n_labels": int(self._n_gt.sum()),
                "conf": self.conf,
                "confusion_matrix": self._confusion.tolist(),
                "confusion_labels": [*self.names, "background"],
                "pr_curves": curves,
            }
        }
