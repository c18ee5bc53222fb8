"""Test-time augmentation: predict on flipped views of a scan and fuse the boxes.

A scan has no up or down and no left or right, and the X-ray recipe (preset ``xray-fast``) trains with both
flips, so every flipped view is as valid as the scan itself. Each view's boxes are flipped back and merged by
weighted box fusion: boxes the views agree on are averaged, which tightens them (higher AP at high IoU
thresholds), and a threat seen in more views scores higher. The cost is one model call per view.

Modes (``--tta``): ``off`` (one view), ``hflip`` (the scan and its mirror image, 2 calls) and ``flips`` (also
upside down, and both: 4 calls). ``flips`` suits models trained with vertical flips (``flipud``); the seed's
presets train without them, and their models have never seen an upside-down bag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np

from xraydet.errors import ConfigError
from xraydet.inference.base import Predictor
from xraydet.inference.box_fusion import FUSION_IOU, weighted_box_fusion
from xraydet.structures import Detections

TTA = Literal["off", "hflip", "flips"]
TTA_MODES: tuple[str, ...] = get_args(TTA)

# Each view is predicted down to this score, whatever the caller's threshold, which applies to the fused boxes
# only. The evaluation predicts at the same floor (its EVAL_CONF is this), so a served answer at conf c is
# exactly the evaluation's prediction cut at c: the report that gated a model describes what its server says.
VIEW_CONF = 0.001

View = tuple[bool, bool]  # (mirrored left-right, upside down)
VIEWS: dict[str, tuple[View, ...]] = {
    "off": ((False, False),),
    "hflip": ((False, False), (True, False)),
    "flips": ((False, False), (True, False), (False, True), (True, True)),
}


def check_tta(tta: str) -> str:
    """``tta`` if it is one of :data:`TTA_MODES`, else a :class:`ConfigError` naming ``--tta``.

    Example:
        >>> check_tta("flips")
        'flips'
        >>> check_tta("rotate")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.errors.ConfigError: --tta rotate: unknown test-time augmentation; choose one of off, ...
    """
    if tta not in TTA_MODES:
        raise ConfigError(
            f"--tta {tta}: unknown test-time augmentation; choose one of {', '.join(TTA_MODES)}"
        )
    return tta


def flip_image(image: np.ndarray, view: View) -> np.ndarray:
    """The scan as ``view`` shows it (a contiguous copy when flipped).

    Example:
        >>> image = np.arange(6).reshape(2, 3)
        >>> flip_image(image, (True, False)).tolist(), flip_image(image, (True, True)).tolist()
        ([[2, 1, 0], [5, 4, 3]], [[5, 4, 3], [2, 1, 0]])
    """
    mirrored, upside_down = view
    out = image[:, ::-1] if mirrored else image
    out = out[::-1] if upside_down else out
    return np.ascontiguousarray(out) if (mirrored or upside_down) else image


def unflip_boxes(dets: Detections, view: View, width: int, height: int) -> Detections:
    """Boxes found on ``view`` of a ``width`` x ``height`` scan, in the scan's own pixels.

    Example:
        >>> d = Detections(np.array([[0, 0, 10, 20]]), np.array([1]), np.array([0.5]))
        >>> unflip_boxes(d, (True, True), 100, 50).xyxy.tolist()
        [[90.0, 30.0, 100.0, 50.0]]
    """
    xyxy = dets.xyxy.copy()
    mirrored, upside_down = view
    if mirrored:
        xyxy[:, [0, 2]] = width - dets.xyxy[:, [2, 0]]
    if upside_down:
        xyxy[:, [1, 3]] = height - dets.xyxy[:, [3, 1]]
    return Detections(xyxy, dets.class_id, dets.confidence, dict(dets.data))


class TTAPredictor(Predictor):
    """Wraps a predictor: each image is predicted in every view of ``tta`` and the boxes are fused.

    Everything else (``names``, ``imgsz``, ``backend``, ``source``, an ONNX model's ``metadata`` ...) is the
    wrapped predictor's.

    Example:
        >>> predictor = TTAPredictor(load_predictor("best.onnx"), "flips")  # doctest: +SKIP
        >>> predictor.predict(load_rgb("scan.png"), conf=0.25)  # doctest: +SKIP
    """

    def __init__(self, base: Predictor, tta: str = "flips", iou_threshold: float = FUSION_IOU) -> None:
        check_tta(tta)
        if base.tta != "off":  # a TTAPredictor, or a served model whose server augments
            raise ConfigError(
                f"{base.source}: its predictions already use test-time augmentation ({base.tta})"
            )
        self.base = base
        self.tta = tta
        self.views = VIEWS[tta]
        self.iou_threshold = iou_threshold

    def __getattr__(self, name: str) -> Any:  # only called for what this wrapper does not have itself
        if name == "base":  # not set yet (copy, unpickling): no recursion through self.base
            raise AttributeError(name)
        return getattr(self.base, name)

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        if len(self.views) == 1:
            return self.base.predict(image, conf, iou)
        h, w = image.shape[:2]
        floor = min(conf, VIEW_CONF)
        if type(self.base).predict_batch is Predictor.predict_batch:  # one view at a time: one copy at a time
            per_view = [self.base.predict(flip_image(image, v), floor, iou) for v in self.views]
        else:  # a backend that batches (Ultralytics on a GPU) gets the views as one batch
            per_view = self.base.predict_batch([flip_image(image, v) for v in self.views], floor, iou)
        fused = weighted_box_fusion(
            [unflip_boxes(d.scored(), v, w, h) for d, v in zip(per_view, self.views, strict=True)],
            self.iou_threshold,
            n_views=len(self.views),
        )
        return fused.with_min_confidence(conf)

    def predict_batch(
        self, images: Sequence[np.ndarray], conf: float = 0.25, iou: float = 0.7
    ) -> list[Detections]:
        return [self.predict(im, conf, iou) for im in images]


def with_tta(predictor: Predictor, tta: str = "off") -> Predictor:
    """``predictor`` itself for ``off``, else a :class:`TTAPredictor` around it.

    Example:
        >>> base = load_predictor("best.onnx")  # doctest: +SKIP
        >>> with_tta(base, "off") is base, with_tta(base, "hflip").tta  # doctest: +SKIP
        (True, 'hflip')
    """
    return predictor if check_tta(tta) == "off" else TTAPredictor(predictor, tta)
