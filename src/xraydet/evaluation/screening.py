"""Screening metrics: does the checkpoint stop the bags holding a threat, and leave the clean ones alone?

Definitions (every image is one bag; all at the operating threshold):

- *threat bag*: an image with at least one labelled box of a threat class.
- *threat-free bag*: an image with no threat label: every image of a ``--negatives`` folder, and images of the
  evaluated split whose labels hold no threat class.
- *threat detected* (``threat_detection_rate``): a predicted box of any threat class overlaps a labelled
  threat with IoU >= ``overlap_iou`` (default 0.1). The class need not match: for a screener a knife flagged
  as scissors still stops the bag, and IoU 0.1 demands the alarm points at the right place without asking for
  a tight box. ``threat_detection_rate_any`` is looser: any threat box anywhere in the bag.
- *false alarm*: a threat-free bag with any threat-class box. ``false_alarm_rate`` is None when no threat-free
  bag was evaluated: it was not measured, and the gate fails it rather than passing it.
- *seed accuracy (top-1 box class = first label)*: over labelled images of the split, the share whose most
  confident box has the class of the image's first label (first line of its label file); no box = wrong.
  It is the seed plan's "Accuracy", kept for comparability; it is not a screening measure.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from xraydet.evaluation.evaluator import DatasetEvaluator, Sample
from xraydet.structures import box_iou

OVERLAP_IOU = 0.1
ACCURACY_LABEL = "seed accuracy (top-1 box class = first label)"


@dataclass(frozen=True)
class BagScores:
    """What the screening metrics need from one bag, independent of the threshold.

    ``hit_score`` is the highest confidence of a threat box overlapping a labelled threat (0 if none);
    ``any_score`` the highest confidence of any threat box (0 if none). A bag is detected at threshold ``t``
    when its score is >= ``t``.
    """

    is_threat_bag: bool
    hit_score: float
    any_score: float


def bag_scores(sample: Sample, threat_ids: set[int], overlap_iou: float = OVERLAP_IOU) -> BagScores:
    """Reduce one sample to its :class:`BagScores`."""
    ids = list(threat_ids)
    gt_threats = sample.gt.of_classes(ids) if ids else sample.gt[[]]
    pred = sample.pred.of_classes(ids) if ids else sample.pred[[]]
    conf = pred.confidence if pred.confidence is not None else np.ones(len(pred))
    any_score = float(conf.max()) if len(pred) else 0.0
    hit_score = 0.0
    if len(gt_threats) and len(pred):
        overlapping = (box_iou(pred.xyxy, gt_threats.xyxy) >= overlap_iou).any(axis=1)
        if overlapping.any():
            hit_score = float(conf[overlapping].max())
    return BagScores(bool(len(gt_threats)), hit_score, any_score)


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


class ScreeningEvaluator(DatasetEvaluator):
    """Task ``screening``: detection and false-alarm rates, the seed's accuracy, counts, at ``conf``."""

    def __init__(
        self, names: list[str], threat_ids: set[int], conf: float = 0.25, overlap_iou: float = OVERLAP_IOU
    ):
        self.names = list(names)
        self.threat_ids = set(threat_ids)
        self.conf = conf
        self.overlap_iou = overlap_iou
        self.reset()

    def reset(self) -> None:
        self._bags: list[tuple[BagScores, bool]] = []
        self._accuracy: dict[int, list[bool]] = defaultdict(list)
        self._n_dets: dict[bool, list[int]] = {False: [], True: []}

    def process(self, sample: Sample) -> None:
        self._bags.append((bag_scores(sample, self.threat_ids, self.overlap_iou), sample.is_negative))
        kept = sample.pred.with_min_confidence(self.conf)
        self._n_dets[sample.is_negative].append(len(kept))
        if not sample.is_negative and len(sample.gt):
            first = int(sample.gt.class_id[0])
            top = kept.sorted_by_confidence()
            self._accuracy[first].append(bool(len(top)) and int(top.class_id[0]) == first)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        t = self.conf
        threat = [b for b, _ in self._bags if b.is_threat_bag]
        clean = [(b, neg) for b, neg in self._bags if not b.is_threat_bag]
        found = sum(b.hit_score >= t for b in threat)
        found_any = sum(b.any_score >= t for b in threat)
        alarms = sum(b.any_score >= t for b, _ in clean)
        negatives = [b for b, neg in clean if neg]
        neg_alarms = sum(b.any_score >= t for b in negatives)
        correct = [ok for oks in self._accuracy.values() for ok in oks]
        per_class = {
            self.names[c] if c < len(self.names) else str(c): float(np.mean(oks))
            for c, oks in sorted(self._accuracy.items())
        }
        dets, neg_dets = self._n_dets[False], self._n_dets[True]
        return {
            "screening": {
                "conf": t,
                "overlap_iou": self.overlap_iou,
                "n_bags": len(self._bags),
                "n_threat_bags": len(threat),
                "n_threat_free_bags": len(clean),
                "n_negative_bags": len(negatives),
                "threats_found": int(found),
                "threats_found_any": int(found_any),
                "threat_detection_rate": _rate(found, len(threat)),
                "threat_detection_rate_any": _rate(found_any, len(threat)),
                "false_alarms": int(alarms),
                "false_alarm_rate": _rate(alarms, len(clean)),
                "false_alarm_rate_negatives": _rate(neg_alarms, len(negatives)),
                "accuracy": float(np.mean(correct)) if correct else None,
                "accuracy_label": ACCURACY_LABEL,
                "n_accuracy_images": len(correct),
                "per_class_accuracy": per_class,
                "avg_detections": float(np.mean(dets)) if dets else 0.0,
                "avg_detections_negatives": float(np.mean(neg_dets)) if neg_dets else None,
            }
        }
