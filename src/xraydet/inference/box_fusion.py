"""Weighted box fusion: merge several predictions of one image into one, averaging the boxes that agree.

Non-maximum suppression keeps the highest-scoring box of a cluster and drops the rest; weighted box fusion
(Solovyev et al., "Weighted boxes fusion", 2021) averages the cluster's corners, weighted by score. When
the predictions come from views of the same scan (test-time augmentation), their box errors partly cancel,
which is what tightens boxes at high IoU thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xraydet.structures import Detections, box_iou

FUSION_IOU = 0.55  # the paper's default: boxes of one class overlapping more than this are one object


def weighted_box_fusion(
    predictions: Sequence[Detections], iou_threshold: float = FUSION_IOU, n_views: int | None = None
) -> Detections:
    """Fuse the predictions of ``n_views`` views (default: ``len(predictions)``) of one image.

    Boxes of the same class are taken in falling score order; each joins the fused box it overlaps most, if
    by more than ``iou_threshold`` (IoU), else starts one. A fused box is its members' score-weighted mean.
    Its score is the mean over the views of each view's best score among the members, a view without a
    member counting 0: an object only some views saw scores lower than one all of them saw, and the weaker
    boxes one view leaves around an object after its NMS do not drag the object's score down.

    Example:
        >>> a = Detections(np.array([[10, 10, 50, 50]]), np.array([0]), np.array([0.9]))
        >>> b = Detections(np.array([[12, 10, 52, 50]]), np.array([0]), np.array([0.6]))
        >>> fused = weighted_box_fusion([a, b])
        >>> fused.xyxy.round(1).tolist(), fused.confidence.round(2).tolist()
        ([[10.8, 10.0, 50.8, 50.0]], [0.75])
        >>> weighted_box_fusion([a, Detections.empty(with_confidence=True)]).confidence.round(2).tolist()
        [0.45]
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    views = n_views if n_views is not None else max(len(predictions), 1)
    if views < max(len(predictions), 1):
        raise ValueError(f"n_views must be at least 1 and the number of predictions ({len(predictions)}), "
                         f"got {views}")
    if any(p.confidence is None for p in predictions if len(p)):
        raise ValueError("weighted_box_fusion fuses predictions: every box needs a confidence")
    kept = [(i, p) for i, p in enumerate(predictions) if len(p)]
    if not kept:
        return Detections.empty(with_confidence=True)
    xyxy = np.concatenate([p.xyxy for _, p in kept])
    class_id = np.concatenate([p.class_id for _, p in kept])
    scores = np.concatenate([p.confidence for _, p in kept if p.confidence is not None])
    view = np.concatenate([np.full(len(p), i) for i, p in kept])
    boxes, ids, fused_scores = [], [], []
    for c in np.unique(class_id):
        mine = class_id == c
        b, s = _fuse_class(xyxy[mine], scores[mine], view[mine], iou_threshold, views)
        boxes.append(b)
        ids.append(np.full(len(b), c, dtype=np.int64))
        fused_scores.append(s)
    fused = Detections(np.concatenate(boxes), np.concatenate(ids), np.concatenate(fused_scores))
    return fused.sorted_by_confidence()


def _fuse_class(
    xyxy: np.ndarray, scores: np.ndarray, view: np.ndarray, iou_threshold: float, n_views: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fused boxes and scores of one class's boxes (``view``: which prediction each box came from)."""
    order = np.argsort(-scores, kind="stable")
    xyxy, scores, view = xyxy[order], scores[order], view[order]
    weights = np.maximum(scores, 1e-9)  # a box scored 0 still has a place in its cluster's mean
    weighted_sum = np.zeros_like(xyxy)  # per cluster: sum of weight * corners
    weight_sum = np.zeros(len(xyxy))
    best_per_view = np.zeros((len(xyxy), n_views))  # per cluster and view: the best member's score
    n = 0
    for box, score, weight, v in zip(xyxy, scores, weights, view, strict=True):
        if n:
            ious = box_iou(box[None], weighted_sum[:n] / weight_sum[:n, None])[0]
            best = int(np.argmax(ious))
            if ious[best] > iou_threshold:
                weighted_sum[best] += weight * box
                weight_sum[best] += weight
                best_per_view[best, v] = max(best_per_view[best, v], score)
                continue
        weighted_sum[n], weight_sum[n], best_per_view[n, v] = weight * box, weight, score
        n += 1
    return weighted_sum[:n] / weight_sum[:n, None], best_per_view[:n].sum(axis=1) / n_views
