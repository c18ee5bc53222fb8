"""Threshold sweep: threat detection rate against false-alarm rate, and the threshold that meets a target.

Each bag is reduced once to its best threat score (:class:`~xraydet.evaluation.screening.BagScores`), so a
rate at any threshold is exact, not re-predicted: bag detected at ``t`` <=> its score >= ``t``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xraydet.evaluation.evaluator import DatasetEvaluator, Sample
from xraydet.evaluation.screening import OVERLAP_IOU, BagScores, bag_scores

DEFAULT_THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.01, 1.0, 0.01))


def sweep_points(
    bags: list[BagScores], thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
) -> list[dict[str, Any]]:
    """Detection rate (overlap and any-box) and false-alarm rate at each threshold (None where no bags)."""
    hit = np.array([b.hit_score for b in bags if b.is_threat_bag])
    hit_any = np.array([b.any_score for b in bags if b.is_threat_bag])
    clean = np.array([b.any_score for b in bags if not b.is_threat_bag])

    def rate(scores: np.ndarray, t: float) -> float | None:
        return float((scores >= t).mean()) if len(scores) else None

    return [
        {
            "threshold": t,
            "detection_rate": rate(hit, t),
            "detection_rate_any": rate(hit_any, t),
            "false_alarm_rate": rate(clean, t),
        }
        for t in thresholds
    ]


def pick_threshold(points: list[dict[str, Any]], target_detection: float) -> dict[str, Any] | None:
    """The point with the lowest false-alarm rate among those with detection rate >= ``target_detection``.

    Ties (and a sweep without threat-free bags, where the false-alarm rate is unknown) go to the highest
    threshold, which raises the fewest alarms. None when no threshold reaches the target.

    Example:
        >>> pts = [{"threshold": 0.1, "detection_rate": 1.0, "false_alarm_rate": 0.5},
        ...        {"threshold": 0.5, "detection_rate": 0.96, "false_alarm_rate": 0.1},
        ...        {"threshold": 0.9, "detection_rate": 0.5, "false_alarm_rate": 0.0}]
        >>> pick_threshold(pts, 0.95)["threshold"]
        0.5
    """
    ok = [p for p in points if p["detection_rate"] is not None and p["detection_rate"] >= target_detection]
    if not ok:
        return None
    far = [1.0 if p["false_alarm_rate"] is None else p["false_alarm_rate"] for p in ok]
    return min(zip(far, ok, strict=True), key=lambda fp: (fp[0], -fp[1]["threshold"]))[1]


class SweepEvaluator(DatasetEvaluator):
    """Task ``sweep``: the detection / false-alarm table over thresholds and the one meeting the target."""

    def __init__(
        self,
        threat_ids: set[int],
        target_detection: float = 0.95,
        thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
        overlap_iou: float = OVERLAP_IOU,
    ) -> None:
        self.threat_ids = set(threat_ids)
        self.target_detection = target_detection
        self.thresholds = thresholds
        self.overlap_iou = overlap_iou
        self.reset()

    def reset(self) -> None:
        self._bags: list[BagScores] = []

    def process(self, sample: Sample) -> None:
        self._bags.append(bag_scores(sample, self.threat_ids, self.overlap_iou))

    def evaluate(self) -> dict[str, dict[str, Any]]:
        points = sweep_points(self._bags, self.thresholds)
        best = pick_threshold(points, self.target_detection)
        if best is None and all(p["detection_rate"] is None for p in points):
            note = "no bag with a labelled threat was evaluated: the detection rate is not measured"
        elif best is None:
            note = f"no threshold reaches a detection rate of {self.target_detection:.0%}"
        elif best["false_alarm_rate"] is None:
            note = "no threat-free bags were evaluated: the false-alarm rate is unknown"
        else:
            note = ""
        return {
            "sweep": {
                "target_detection": self.target_detection,
                "recommended_threshold": None if best is None else best["threshold"],
                "recommended": best,
                "note": note,
                "points": points,
            }
        }
