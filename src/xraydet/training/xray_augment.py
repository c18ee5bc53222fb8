"""X-ray augmentations Ultralytics lacks: quarter turns, threat image projection (TIP) and threat-free bags.

- **Quarter turns.** A scan has no up or down, and a bag lies on the belt in any of four orientations.
  Ultralytics' ``degrees`` draws any angle, and the axis-aligned box around a rotated thin blade grows up to
  twice its size; a quarter turn moves a box exactly.
- **Threat image projection.** Checkpoints test their screeners by projecting threat images into real bags
  (TIP). X-ray images compose by multiplication: what passes two objects is the product of what passes each
  (Beer-Lambert). So a threat's box crop, divided by its scan's empty-belt brightness and multiplied into
  another bag, approximates a bag holding both, with no segment masks (Ultralytics' ``copy_paste`` needs
  masks; OPIXray has boxes only). The crop carries a little of its source bag's clutter; a margin that fades
  to "nothing in the way" (transmission 1) hides the crop's edges.
- **Threat-free bags.** Background images (scans with no labels) teach a detector that clutter is not a
  threat. Labelled sets rarely ship them, so a scan is turned into one: its labelled objects are cut away
  with the rest of their band of the image, the widest box-free side of the bag is kept in place, and the
  cut-away part shows the empty belt.

All three act on each scan as it is loaded (``get_image_and_label``), before mosaic, so every mosaic tile gets
them. Projection and threat-free bags stop with mosaic in the last ``close_mosaic`` epochs, as Ultralytics'
``copy_paste`` does, so the model ends on real, whole scans only. This module needs only numpy, OpenCV,
Ultralytics and xraydet's numpy-only :mod:`xraydet.structures`, so the GPU benchmark
(benchmarks/gpu_recipe.py) loads it from its file on a machine without xraydet's other dependencies.

Example:
    >>> import numpy as np
    >>> rot90_boxes(np.array([[0.25, 0.125, 0.5, 0.25]]), k=1).tolist()  # cx, cy, w, h
    [[0.125, 0.75, 0.25, 0.5]]
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
from ultralytics.data.dataset import YOLODataset
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.instance import Instances

from xraydet.structures import xywhn_to_xyxy, xyxy_to_xywhn

log = logging.getLogger(__name__)

_CV2_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


@dataclass(frozen=True)
class XrayAugment:
    """Per-scan probabilities of the X-ray augmentations (0 = off), and which classes may be projected.

    Attributes:
        rot90: probability of turning a scan by a random 90, 180 or 270 degrees.
        threat_projection: probability of projecting one threat, cut from another training scan, into a scan.
        projection_classes: class ids that may be projected (None = every class): on a set that also labels
            harmless items, project the threats only.
        threat_free: probability of replacing a scan by a threat-free bag made from it
            (:func:`threat_free_view`): a background image with no labels.
    """

    rot90: float = 0.0
    threat_projection: float = 0.0
    projection_classes: tuple[int, ...] | None = None
    threat_free: float = 0.0

    @property
    def active(self) -> bool:
        return self.rot90 > 0 or self.threat_projection > 0 or self.threat_free > 0


def rot90_boxes(boxes: np.ndarray, k: int) -> np.ndarray:
    """Normalised ``cx, cy, w, h`` boxes of an image turned ``k`` quarter turns anticlockwise (``np.rot90``).

    Example:
        >>> rot90_boxes(np.array([[0.25, 0.125, 0.5, 0.25]]), k=2).tolist()
        [[0.75, 0.875, 0.5, 0.25]]
    """
    cx, cy, w, h = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).T
    k %= 4
    if k == 1:
        cols = (cy, 1 - cx, h, w)
    elif k == 2:
        cols = (1 - cx, 1 - cy, w, h)
    elif k == 3:
        cols = (1 - cy, cx, h, w)
    else:
        cols = (cx, cy, w, h)
    return np.stack(cols, axis=1).astype(np.float32)


def rotate90(image: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and its normalised xywh ``boxes`` turned ``k`` quarter turns anticlockwise."""
    k %= 4
    if k and (image.ndim == 2 or image.shape[2] <= 4):  # OpenCV turns an image 5x faster than a numpy copy
        turned = cv2.rotate(image, _CV2_TURNS[k])
        if turned.ndim < image.ndim:  # OpenCV drops a single channel's axis
            turned = turned[..., None]
    else:
        turned = np.ascontiguousarray(np.rot90(image, k))
    return turned, rot90_boxes(boxes, k)


def background_level(image: np.ndarray) -> np.ndarray:
    """Per-channel brightness of the empty belt (nothing in the way): the 99th percentile of the scan.

    Taken over every 4th row and column: the full scan would cost the loader 3 ms a sample.
    """
    pixels = image[::4, ::4].reshape(-1, image.shape[-1])
    return np.maximum(np.percentile(pixels, 99, axis=0), 1.0).astype(np.float32)


def threat_layer(
    scan: np.ndarray, box: np.ndarray, margin: float = 0.15, belt: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The transmission layer of one labelled object: ``(h, w, channels)`` floats, 1 = nothing in the way.

    ``box`` is normalised xywh in ``scan``. The layer covers the box plus ``margin`` x its longer side on each
    side; inside the box it is the scan divided by its belt brightness (``belt``, the scan's
    :func:`background_level` unless given), and across the margin it fades to 1. Also returns where the box
    lies in the layer (x1, y1, x2, y2, pixels).
    """
    h, w = scan.shape[:2]
    x1, y1, x2, y2 = (round(float(v)) for v in xywhn_to_xyxy(box, w, h)[0])
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    pad = max(round(margin * max(x2 - x1, y2 - y1)), 2)
    X1, Y1, X2, Y2 = max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, w), min(y2 + pad, h)
    crop = scan[Y1:Y2, X1:X2].astype(np.float32) / (background_level(scan) if belt is None else belt)
    # Weight 1 inside the box, falling linearly to 0 at the margin's outer edge.
    ys, xs = np.arange(Y1, Y2, dtype=np.float32), np.arange(X1, X2, dtype=np.float32)
    dy = np.maximum(np.maximum(y1 - ys, ys - (y2 - 1)), 0) / pad
    dx = np.maximum(np.maximum(x1 - xs, xs - (x2 - 1)), 0) / pad
    weight = np.clip(1 - np.maximum(dy[:, None], dx[None, :]), 0, 1)[..., None]
    layer = 1 - weight * (1 - np.clip(crop, 0, 1))
    return layer, (x1 - X1, y1 - Y1, x2 - X1, y2 - Y1)


def project_threat(
    bag: np.ndarray,
    bag_boxes: np.ndarray,
    layer: np.ndarray,
    inner: tuple[int, int, int, int],
    rng: random.Random,
    max_overlap: float = 0.2,
    min_clutter: float = 0.3,
    tries: int = 10,
    belt: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Multiply a threat ``layer`` (see :func:`threat_layer`) into ``bag`` at a random spot inside the bag.

    A spot is taken when the new box covers at most ``max_overlap`` of any labelled box (and they cover at
    most that much of it), and at least ``min_clutter`` of the pixels under it are darker than 90% of the belt
    (``belt``: the bag's :func:`background_level` unless given; a threat floating beside the bag would be too
    easy). Returns the new scan (a copy) and the pasted box, normalised xywh; or ``bag`` itself and None when
    no spot was found in ``tries`` draws.

    Example:
        >>> bag = np.full((64, 64, 3), 255, np.uint8); bag[8:56, 8:56] = 128
        >>> scan = np.full((64, 64, 3), 255, np.uint8); scan[20:30, 10:40] = 51
        >>> layer, inner = threat_layer(scan, np.array([25 / 64, 25 / 64, 30 / 64, 10 / 64]))
        >>> out, box = project_threat(bag, np.zeros((0, 4)), layer, inner, random.Random(0))
        >>> int(out.min()), box is not None
        (26, True)
    """
    bh, bw = bag.shape[:2]
    lh, lw = layer.shape[:2]
    if lh > bh or lw > bw:
        return bag, None
    ix1, iy1, ix2, iy2 = inner
    dark = _darker_than(0.9 * (background_level(bag) if belt is None else belt))
    existing = xywhn_to_xyxy(bag_boxes, bw, bh).tolist()
    for _ in range(tries):
        x0, y0 = rng.randint(0, bw - lw), rng.randint(0, bh - lh)
        new = (x0 + ix1, y0 + iy1, x0 + ix2, y0 + iy2)
        if _too_close(new, existing, max_overlap) or not _cluttered(bag, new, dark, min_clutter):
            continue
        out = bag.copy()
        region = out[y0 : y0 + lh, x0 : x0 + lw].astype(np.float32) * layer
        out[y0 : y0 + lh, x0 : x0 + lw] = np.clip(np.rint(region), 0, 255).astype(bag.dtype)
        return out, xyxy_to_xywhn(np.array(new, np.float32), bw, bh)[0].astype(np.float32)
    return bag, None


def threat_free_view(
    scan: np.ndarray,
    boxes: np.ndarray,
    min_keep: float = 0.25,
    pad: float = 0.1,
    belt: np.ndarray | None = None,
) -> np.ndarray | None:
    """``scan`` with every labelled object cut away: a threat-free bag, or None when too little is left.

    The labelled boxes (normalised xywh), each grown by ``pad`` x its size against loose edges, span a
    rectangle. Of the four bands of the scan beside it (left, right, above, below) the largest is kept in
    place, and the rest of the scan becomes empty belt (``belt``: its :func:`background_level` unless given).
    None when that band covers less than ``min_keep`` of the scan. Nothing is resampled: every kept pixel is a
    scanned one.

    Example:
        >>> scan = np.full((40, 80, 3), 200, np.uint8); scan[10:30, 50:60] = 20  # a threat on the right
        >>> out = threat_free_view(scan, np.array([[55 / 80, 0.5, 10 / 80, 0.5]]))
        >>> bool((out[:, :49] == scan[:, :49]).all()), int(out[:, 49:].min())  # left band kept, the rest belt
        (True, 200)
    """
    h, w = scan.shape[:2]
    if len(boxes) == 0:
        return scan
    grown = xywhn_to_xyxy(np.asarray(boxes, dtype=np.float32) * [1, 1, 1 + 2 * pad, 1 + 2 * pad], w, h)
    x1 = int(np.clip(np.floor(grown[:, 0].min()), 0, w))
    y1 = int(np.clip(np.floor(grown[:, 1].min()), 0, h))
    x2 = int(np.clip(np.ceil(grown[:, 2].max()), 0, w))
    y2 = int(np.clip(np.ceil(grown[:, 3].max()), 0, h))
    bands = {  # name -> (area, slices of the kept band)
        "left": (x1 * h, (slice(0, h), slice(0, x1))),
        "right": ((w - x2) * h, (slice(0, h), slice(x2, w))),
        "above": (y1 * w, (slice(0, y1), slice(0, w))),
        "below": ((h - y2) * w, (slice(y2, h), slice(0, w))),
    }
    area, kept = max(bands.values(), key=lambda band: band[0])
    if area < min_keep * h * w:
        return None
    out = np.empty_like(scan)
    # One belt-coloured row, then copied down: broadcasting the per-channel value itself is 40x slower.
    belt = background_level(scan) if belt is None else belt
    out[...] = np.tile(np.rint(belt).astype(scan.dtype), (w, 1))[None]
    out[kept] = scan[kept]
    return out


def _too_close(new: tuple[int, int, int, int], existing: list[list[float]], max_overlap: float) -> bool:
    """Whether box ``new`` covers more than ``max_overlap`` of any ``existing`` box, or one of them of it.

    All boxes are pixel xyxy. Plain Python: a scan holds a box or two, and a numpy call costs more than that.
    """
    nx1, ny1, nx2, ny2 = new
    area_new = (nx2 - nx1) * (ny2 - ny1)
    for x1, y1, x2, y2 in existing:
        inter = max(min(nx2, x2) - max(nx1, x1), 0) * max(min(ny2, y2) - max(ny1, y1), 0)
        if inter > max_overlap * min(area_new, (x2 - x1) * (y2 - y1)):
            return True
    return False


def _darker_than(threshold: np.ndarray) -> list[int]:
    """Per channel, the integer ``t`` for which an integer ``pixel < t`` exactly when ``pixel < threshold``.

    Comparing integer pixels with Python ints is several times faster than with a float array.
    """
    return [int(t) for t in np.ceil(threshold)]


def _cluttered(image: np.ndarray, box: tuple[int, int, int, int], dark: list[int], fraction: float) -> bool:
    """Whether at least ``fraction`` of ``image``'s pixels in ``box`` (pixel xyxy) lie below ``dark``
    (:func:`_darker_than`) in every channel; False for an empty box."""
    x1, y1, x2, y2 = box
    under = image[y1:y2, x1:x2]
    if under.size == 0:
        return False
    # Channel by channel: numpy's all(axis=-1) over a 3-long last axis is 10x slower.
    below = np.logical_and.reduce([under[..., c] < t for c, t in enumerate(dark)])
    return np.count_nonzero(below) / below.size >= fraction


# -- Ultralytics adapter --


class XrayDataset(YOLODataset):
    """A YOLODataset that applies :class:`XrayAugment` to each training scan as it is loaded.

    Made from the data set Ultralytics builds by :func:`as_xray_dataset`, as :func:`xray_trainer`'s trainer
    does.
    """

    xray: XrayAugment = XrayAugment()
    _belts: dict[int, np.ndarray] | None = None  # scan index -> its background_level (see belt_level)

    def belt_level(self, index: int) -> np.ndarray:
        """The :func:`background_level` of scan ``index``, worked out once per scan and loader worker.

        A scan loads the same each time (``load_image``: from the RAM cache, or read and resized alike), and
        its percentile costs the loader more than the projection itself.
        """
        if self._belts is None:
            self._belts = {}
        belt = self._belts.get(index)
        if belt is None:
            belt = self._belts[index] = background_level(self.load_image(index)[0])
        return belt

    def get_image_and_label(self, index: int) -> dict[str, Any]:
        label = super().get_image_and_label(index)
        if not (self.augment and self.xray.active):
            return label
        instances: Instances = label["instances"]
        if len(instances.segments) or instances.keypoints is not None:
            return label  # boxes only: segments and keypoints would not follow
        rng = random.Random(random.getrandbits(64))  # Ultralytics seeds `random` per loader worker
        project = rng.random() < self.xray.threat_projection
        turn = rng.random() < self.xray.rot90
        # Drawn last, and only when on: the other two draw as they did before threat-free bags existed.
        clear = self.xray.threat_free > 0 and rng.random() < self.xray.threat_free
        if not (clear or project or turn):
            return label
        image, boxes, cls = label["img"], instances.bboxes.copy(), label["cls"]
        cleared = None
        if clear and len(boxes):
            cleared = threat_free_view(image, boxes, belt=self.belt_level(index))
        if cleared is not None:
            image, boxes, cls = cleared, boxes[:0], cls[:0]
        elif project:
            image, boxes, cls = self._project(image, boxes, cls, index, rng)
        if turn:
            # Rectangular batches share one shape, which a quarter turn would not fit: only half turns there.
            image, boxes = rotate90(image, boxes, 2 if self.rect else rng.randint(1, 3))
            label["resized_shape"] = image.shape[:2]
        label["img"], label["cls"] = image, cls
        label["instances"] = Instances(
            boxes, np.zeros((0, 1000, 2), dtype=np.float32), bbox_format="xywh", normalized=True
        )
        return label

    def _project(
        self, image: np.ndarray, boxes: np.ndarray, cls: np.ndarray, index: int, rng: random.Random
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        wanted = self.xray.projection_classes
        for _ in range(5):  # a few draws: the scan drawn may hold no projectable object
            j = rng.randrange(len(self.labels))
            source = self.labels[j]
            ids = [i for i, c in enumerate(source["cls"].reshape(-1)) if wanted is None or int(c) in wanted]
            if j == index or not ids:
                continue
            i = rng.choice(ids)
            layer, inner = threat_layer(self.load_image(j)[0], source["bboxes"][i], belt=self.belt_level(j))
            k = rng.randint(0, 3)
            if k:
                layer, inner = _turn_layer(layer, inner, k)
            image, box = project_threat(image, boxes, layer, inner, rng, belt=self.belt_level(index))
            if box is not None:
                boxes = np.concatenate([boxes, box[None]], axis=0)
                cls = np.concatenate([cls, source["cls"][i : i + 1].reshape(1, 1).astype(cls.dtype)], axis=0)
            break
        return image, boxes, cls

    def close_mosaic(self, hyp: Any) -> None:
        self.xray = replace(self.xray, threat_projection=0.0, threat_free=0.0)
        super().close_mosaic(hyp)


def as_xray_dataset(dataset: YOLODataset, augment: XrayAugment) -> XrayDataset:
    """``dataset`` (built by Ultralytics) as an :class:`XrayDataset` applying ``augment``: the same object.

    The class is swapped in place because Ultralytics' ``build_yolo_dataset`` picks the class itself, with no
    hook for ours; :class:`XrayDataset` adds behaviour only.
    """
    dataset.__class__ = XrayDataset
    assert isinstance(dataset, XrayDataset)
    dataset.xray = augment
    return dataset


def _turn_layer(
    layer: np.ndarray, inner: tuple[int, int, int, int], k: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``layer`` and the box ``inner`` (pixel xyxy in it) turned ``k`` quarter turns anticlockwise, as
    :func:`rotate90` turns an image and its boxes, in integer pixels."""
    h, w = layer.shape[:2]
    x1, y1, x2, y2 = inner
    k %= 4
    turned = {
        0: (x1, y1, x2, y2),
        1: (y1, w - x2, y2, w - x1),
        2: (w - x2, h - y2, w - x1, h - y1),
        3: (h - y2, x1, h - y1, x2),
    }[k]
    return rotate90(layer, np.zeros((0, 4)), k)[0], turned


class XrayDetectionTrainer(DetectionTrainer):
    """Ultralytics' detection trainer whose training set is an :class:`XrayDataset` (:func:`xray_trainer`)."""

    xray: XrayAugment = XrayAugment()

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        dataset = super().build_dataset(img_path, mode, batch)
        if mode == "train" and type(dataset) is YOLODataset:
            dataset = as_xray_dataset(dataset, self.xray)
            log.info("training scans augmented: %s", self.xray)
            polygons = sum(1 for label in dataset.labels if len(label.get("segments") or []))
            if polygons and self.xray.active:
                log.warning(
                    "xray_augment: %d of %d training scans have polygon labels; they are not augmented "
                    "(the polygons would not follow)",
                    polygons,
                    len(dataset.labels),
                )
        return dataset


def xray_trainer(augment: XrayAugment) -> type[DetectionTrainer]:
    """A trainer class for ``YOLO(...).train(trainer=...)`` that applies ``augment`` to the training scans.

    Example:
        >>> trainer = xray_trainer(XrayAugment(rot90=0.5, threat_projection=0.5, threat_free=0.1))
        >>> trainer.xray.rot90
        0.5
    """
    return type("XrayDetectionTrainer", (XrayDetectionTrainer,), {"xray": augment})
