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

    Boxes of the same class are taken in falling score order; each joins the first fused box it overlaps by
    more than ``iou_threshold`` (IoU), else starts one. A fused box is its members' score-weighted mean, and
    its score their mean score times ``min(members, n_views) / n_views``: an object only some views saw scores
    lower than one all of them saw.

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
    if views < 1:
        raise ValueError(f"n_views must be at least 1, got {views}")
    kept = [p for p in predictions if len(p)]
    if not kept:
        return Detections.empty(with_confidence=True)
    if any(p.confidence is None for p in kept):
        raise ValueError("weighted_box_fusion fuses predictions: every box needs a confidence")
    xyxy = np.concatenate([p.xyxy for p in kept])
    class_id = np.concatenate([p.class_id for p in kept])
    scores = np.concatenate([p.confidence for p in kept if p.confidence is not None])
    boxes, ids, fused_scores = [], [], []
    for c in np.unique(class_id):
        b, s = _fuse_class(xyxy[class_id == c], scores[class_id == c], iou_threshold, views)
        boxes.append(b)
        ids.append(np.full(len(b), c, dtype=np.int64))
        fused_scores.append(s)
    fused = Detections(np.concatenate(boxes), np.concatenate(ids), np.concatenate(fused_scores))
    return fused.sorted_by_confidence()


def _fuse_class(
    xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, n_views: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fused boxes and scores of one class's boxes."""
    order = np.argsort(-scores, kind="stable")
    xyxy, scores = xyxy[order], scores[order]
    weights = np.maximum(scores, 1e-9)  # a box scored 0 still has a place in its cluster's mean
    weighted_sum = np.zeros_like(xyxy)  # per cluster: sum of weight * corners
    weight_sum = np.zeros(len(xyxy))
    score_sum = np.zeros(len(xyxy))
    members = np.zeros(len(xyxy), dtype=np.int64)
    n = 0
    for box, score, weight in zip(xyxy, scores, weights, strict=True):
        if n:
            ious = box_iou(box[None], weighted_sum[:n] / weight_sum[:n, None])[0]
            best = int(np.argmax(ious))
            if ious[best] > iou_threshold:
                weighted_sum[best] += weight * box
                weight_sum[best] += weight
                score_sum[best] += score
                members[best] += 1
                continue
        weighted_sum[n], weight_sum[n], score_sum[n], members[n] = weight * box, weight, score, 1
        n += 1
    boxes = weighted_sum[:n] / weight_sum[:n, None]
    mean_score = score_sum[:n] / members[:n]
    return boxes, mean_score * np.minimum(members[:n], n_views) / n_views
