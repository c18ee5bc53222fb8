"""Annotation formats, one small module each, all reading into and writing from the same record.

A reader turns one annotation file into :class:`Record` objects: the image it belongs to, the image size,
pixel ``xyxy`` boxes and class *names* (never ids: each format numbers classes its own way, and the one
place that assigns YOLO ids is :func:`xraydet.data.convert.resolve_classes`). Every record carries
``where``, the file and line/record it came from, so errors point at the source.

Formats: :mod:`.yolo`, :mod:`.coco` (including Roboflow exports), :mod:`.voc` (Pascal VOC xml),
:mod:`.loctoken` (PaliGemma / OpenAI-JSONL ``<loc>`` tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xraydet.data.dataset import DatasetError
from xraydet.structures import Detections

FORMATS = ("yolo", "coco", "voc", "loctoken")


class FormatError(DatasetError):
    """An annotation file that cannot be converted; the message names the file and line or record."""


def clip_to_image(boxes: np.ndarray, width: int, height: int, where: str) -> tuple[np.ndarray, bool]:
    """Pixel ``xyxy`` boxes clipped to the image, and whether any changed.

    A box with no area left inside the image raises :class:`FormatError` naming ``where``: clipped, it would
    become a zero-size YOLO line that Ultralytics drops.

    Example:
        >>> clip_to_image(np.array([[-5.0, 0, 10, 10]]), 64, 48, "a.xml")[0].tolist()
        [[0.0, 0.0, 10.0, 10.0]]
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    clipped = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float64))
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        box = [round(float(v), 3) for v in boxes[int(np.argmax(empty))]]
        raise FormatError(f"{where}: box {box} lies outside the {width}x{height} image")
    return clipped, not np.array_equal(clipped, boxes)


@dataclass
class Record:
    """One image's annotations as read from a source format.

    Attributes:
        file_name: The image reference as written in the source (relative path, basename or URL).
        width: Image width in pixels, or None when the format does not store it (read from the image).
        height: Image height in pixels, or None.
        boxes: ``(N, 4)`` absolute pixel ``xyxy``.
        labels: ``N`` class names.
        where: ``file:line`` or ``file: record`` for error messages.
        image_path: The image on disk, once found.
        image_bytes: The encoded image when the source embeds it (``data:`` URLs in JSONL).
        notes: Non-fatal remarks (clipped boxes, skipped crowd annotations), shown to the user.
        normalized: True while ``boxes`` are fractions of the image side (formats that do not store the
            image size); :meth:`set_size` turns them into pixels.
    """

    file_name: str
    width: int | None
    height: int | None
    boxes: np.ndarray
    labels: list[str]
    where: str
    image_path: Path | None = None
    image_bytes: bytes | None = None
    notes: list[str] = field(default_factory=list)
    normalized: bool = False

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if len(self.labels) != len(self.boxes):
            raise ValueError(f"{self.where}: {len(self.labels)} labels for {len(self.boxes)} boxes")

    def set_size(self, width: int, height: int) -> None:
        """Record the image size; normalised boxes become pixels, pixel boxes are clipped to the image."""
        self.width, self.height = int(width), int(height)
        scale = np.array([width, height, width, height], dtype=np.float64)
        if self.normalized:
            self.boxes = self.boxes * scale
            self.normalized = False
        clipped, changed = clip_to_image(self.boxes, self.width, self.height, self.where)
        if changed:
            self.notes.append(f"{self.where}: box clipped to the {width}x{height} image")
            self.boxes = clipped

    def detections(self, names: list[str]) -> Detections:
        """The boxes as :class:`Detections` with ids into ``names`` (every label must be in ``names``)."""
        index = {n: i for i, n in enumerate(names)}
        return Detections(self.boxes, np.array([index[label] for label in self.labels], dtype=np.int64))

    @classmethod
    def from_detections(
        cls, dets: Detections, names: list[str], file_name: str, width: int, height: int, where: str = ""
    ) -> Record:
        return cls(
            file_name,
            width,
            height,
            dets.xyxy.copy(),
            [names[int(c)] for c in dets.class_id],
            where or file_name,
        )


@dataclass
class AnnotationSet:
    """What a reader returns for one annotation file.

    ``declared_names`` is the class list the file itself declares in its own id order (COCO categories), or
    None when the format only names classes per object (VOC, loc tokens). ``mapping`` describes how source
    class ids were mapped, for printing.
    """

    records: list[Record]
    declared_names: list[str] | None = None
    source_ids: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)
