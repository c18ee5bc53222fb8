"""The one detection record that flows through every layer of xraydet.

Data tools read labels into :class:`Detections`, inference backends return them, evaluators consume them and
the HTTP API serialises them. Boxes are always absolute pixel ``xyxy``; conversions to and from YOLO's
normalised ``cxcywh`` live here so that no other module re-implements them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


def xywhn_to_xyxy(xywhn: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert normalised centre boxes ``(cx, cy, w, h)`` to absolute ``(x1, y1, x2, y2)`` pixels.

    Example:
        >>> xywhn_to_xyxy(np.array([[0.5, 0.5, 0.5, 0.25]]), 100, 200).tolist()
        [[25.0, 75.0, 75.0, 125.0]]
    """
    boxes = np.asarray(xywhn, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = boxes[:, 0] * width, boxes[:, 1] * height, boxes[:, 2] * width, boxes[:, 3] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def xyxy_to_xywhn(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert absolute ``(x1, y1, x2, y2)`` pixels to normalised centre boxes ``(cx, cy, w, h)``.

    Example:
        >>> xyxy_to_xywhn(np.array([[25.0, 75.0, 75.0, 125.0]]), 100, 200).tolist()
        [[0.5, 0.5, 0.5, 0.25]]
    """
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.stack(
        [(boxes[:, 0] + w / 2) / width, (boxes[:, 1] + h / 2) / height, w / width, h / height], axis=1
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of ``xyxy`` boxes, shape ``(len(a), len(b))``.

    Example:
        >>> box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]])).round(3).tolist()
        [[0.333]]
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass(frozen=True)
class Detections:
    """Boxes of one image: ground truth (``confidence`` is None) or predictions.

    Attributes:
        xyxy: ``(N, 4)`` float array of absolute pixel corners.
        class_id: ``(N,)`` int array of class indices into the data set's ``names``.
        confidence: ``(N,)`` float array of scores, or None for ground truth.

    Example:
        >>> d = Detections(xyxy=np.array([[0, 0, 10, 10]]), class_id=np.array([2]))
        >>> len(d), d.is_ground_truth
        (1, True)
    """

    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if len(class_id) != len(xyxy):
            raise ValueError(f"class_id has {len(class_id)} entries but xyxy has {len(xyxy)} boxes")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "class_id", class_id)
        if self.confidence is not None:
            conf = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
            if len(conf) != len(xyxy):
                raise ValueError(f"confidence has {len(conf)} entries but xyxy has {len(xyxy)} boxes")
            object.__setattr__(self, "confidence", conf)

    @classmethod
    def empty(cls, with_confidence: bool = False) -> Detections:
        """An image with no boxes."""
        return cls(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0) if with_confidence else None)

    @classmethod
    def from_yolo(cls, rows: np.ndarray, width: int, height: int) -> Detections:
        """Build from YOLO label rows ``(class, cx, cy, w, h)`` normalised to the image size."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return cls(xywhn_to_xyxy(rows[:, 1:], width, height), rows[:, 0].astype(np.int64))

    def to_yolo(self, width: int, height: int) -> np.ndarray:
        """YOLO rows ``(class, cx, cy, w, h)``, normalised to ``width`` x ``height``."""
        return np.concatenate([self.class_id[:, None].astype(np.float64), self.xywhn(width, height)], axis=1)

    def xywhn(self, width: int, height: int) -> np.ndarray:
        return xyxy_to_xywhn(self.xyxy, width, height)

    @property
    def is_ground_truth(self) -> bool:
        return self.confidence is None

    @property
    def area(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int, float | None]]:
        for i in range(len(self)):
            yield (
                self.xyxy[i],
                int(self.class_id[i]),
                None if self.confidence is None else float(self.confidence[i]),
            )

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """Select boxes by index, slice, integer list or boolean mask."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Detections(
            self.xyxy[idx],
            self.class_id[idx],
            None if self.confidence is None else self.confidence[idx],
            {k: np.asarray(v)[idx] for k, v in self.data.items()},
        )

    def scored(self) -> Detections:
        """Predictions with scores: a backend that gives none is taken as certain (every score 1).

        Example:
            >>> Detections(np.array([[0, 0, 1, 1]]), np.array([0])).scored().confidence.tolist()
            [1.0]
        """
        if self.confidence is not None:
            return self
        return Detections(self.xyxy, self.class_id, np.ones(len(self)), dict(self.data))

    def with_min_confidence(self, threshold: float) -> Detections:
        """Predictions scoring at least ``threshold`` (ground truth is returned unchanged)."""
        if self.confidence is None:
            return self
        return self[self.confidence >= threshold]

    def sorted_by_confidence(self) -> Detections:
        if self.confidence is None or len(self) == 0:
            return self
        return self[np.argsort(-self.confidence, kind="stable")]

    def of_classes(self, class_ids: Sequence[int] | set[int]) -> Detections:
        """Only the boxes whose class is in ``class_ids`` (e.g. the threat classes)."""
        return self[np.isin(self.class_id, np.fromiter(class_ids, dtype=np.int64))]
