"""Test-time augmentation: views are flipped back exactly, fused, and recorded; a real model's fused
predictions mirror with the scan."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from xraydet.errors import ConfigError
from xraydet.inference import Predictor, load_predictor, load_rgb, with_tta
from xraydet.inference.tta import VIEWS, TTAPredictor, flip_image, unflip_boxes
from xraydet.structures import Detections


class BrightBlobDetector(Predictor):
    """A real (if simple) detector: the bounding box of the pixels brighter than 200 in each colour channel,
    as class 0 (red), 1 (green) or 2 (blue), scored by the channel's mean there. Counts the images it sees."""

    backend = "blob"
    imgsz = 64
    source = "blob"
    def __init__(self) -> None:
        self.names = ["red", "green", "blue"]
        self.calls = 0
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        self.calls += 1
        self.shapes.append(image.shape)
        boxes, classes, scores = [], [], []
        for c in range(3):
            ys, xs = np.nonzero(image[..., c] > 200)
            if len(xs):
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                classes.append(c)
                scores.append(image[ys, xs, c].mean() / 255)
        out = Detections(np.array(boxes, float).reshape(-1, 4), np.array(classes), np.array(scores))
        return out.with_min_confidence(conf)


def scan() -> np.ndarray:
    """A 90 x 130 scan, neither mirror- nor flip-symmetric: a red bar top left, a green block bottom right."""
    image = np.full((90, 130, 3), 40, np.uint8)
    image[5:15, 10:60, 0] = 255
    image[50:80, 100:120, 1] = 230
    return image


@pytest.mark.parametrize("tta", ["off", "hflip", "flips"])
def test_every_view_is_flipped_back_onto_the_scan(tta: str) -> None:
    detector = BrightBlobDetector()
    predictor = with_tta(detector, tta)
    fused = predictor.predict(scan(), conf=0.25)
    assert detector.calls == len(VIEWS[tta])
    by_class = {c: box.tolist() for box, c, _ in fused}
    assert by_class == {0: [10.0, 5.0, 60.0, 15.0], 1: [100.0, 50.0, 120.0, 80.0]}
    # seen in every view, so fusion keeps the score
    np.testing.assert_allclose(sorted(fused.confidence), sorted([230 / 255, 1.0]))
    assert predictor.tta == tta


def test_flip_and_unflip_are_inverse_on_any_box() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    xy = rng.uniform(0, 30, (20, 2))
    boxes = Detections(np.concatenate([xy, xy + rng.uniform(1, 20, (20, 2))], 1), np.zeros(20), np.ones(20))
    for view in VIEWS["flips"]:
        flipped = flip_image(image, view)
        assert flipped.flags.c_contiguous and flipped.shape == image.shape
        assert np.array_equal(flip_image(flipped, view), image)
        twice = unflip_boxes(unflip_boxes(boxes, view, 53, 37), view, 53, 37)
        np.testing.assert_allclose(twice.xyxy, boxes.xyxy)
        once = unflip_boxes(boxes, view, 53, 37)
        assert np.all(once.xyxy[:, 2:] >= once.xyxy[:, :2])  # corners stay ordered


def test_a_box_seen_in_few_views_falls_below_the_threshold() -> None:
    image = scan()
    image[:, 65:, 1] = 40  # no green block ...
    image[50:80, 20:40, 1] = 230  # ... except mirrored: only a left-right flip moves it where it was
    detector = BrightBlobDetector()

    class OnlyOnTheRight(Predictor):
        backend, imgsz, source = "blob", 64, "blob"

        def __init__(self) -> None:
            self.names = detector.names

        def predict(self, im: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
            found = detector.predict(im, conf, iou)
            return found[(found.class_id != 1) | (found.xyxy[:, 0] > 65)]

    fused = TTAPredictor(OnlyOnTheRight(), "flips").predict(image, conf=0.5)
    # the green block is found in 2 of 4 views (the mirrored ones): 0.9 * 2 / 4 < 0.5; the red bar in all 4
    assert fused.class_id.tolist() == [0]
    everything = TTAPredictor(OnlyOnTheRight(), "flips").predict(image, conf=0.01)
    green = everything[everything.class_id == 1]
    np.testing.assert_allclose(green.confidence, [230 / 255 / 2])
    np.testing.assert_allclose(green.xyxy, [[20.0, 50.0, 40.0, 80.0]])


class LeftShyDetector(BrightBlobDetector):
    """Scores a blob by where it is: 0.2 at the left edge up to 0.4 at the right, so a view and its mirror
    image disagree about the same object."""

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        found = super().predict(image, 0.0, iou)
        centre_x = (found.xyxy[:, 0] + found.xyxy[:, 2]) / 2 / image.shape[1]
        return Detections(found.xyxy, found.class_id, 0.2 + 0.2 * centre_x).with_min_confidence(conf)


def test_views_below_the_callers_threshold_still_count() -> None:
    """The red bar scores 0.254 in the two unmirrored views and 0.346 in the mirrored ones (the green block
    the other way round): fused 0.30. Asked at 0.28, views cut at 0.28 would keep half of each and fuse to
    0.17; the answer must be the 0.001 prediction cut at 0.28, as an evaluation sees it."""
    predictor = TTAPredictor(LeftShyDetector(), "flips")
    everything = predictor.predict(scan(), conf=0.001)
    np.testing.assert_allclose(everything.confidence, [0.3, 0.3])  # a view and its mirror average to 0.3
    answer = predictor.predict(scan(), conf=0.28)
    assert sorted(answer.class_id.tolist()) == [0, 1]
    np.testing.assert_allclose(answer.xyxy, everything.with_min_confidence(0.28).xyxy)


def test_bad_modes_and_double_wrapping_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tta rotate: unknown test-time augmentation"):
        with_tta(BrightBlobDetector(), "rotate")
    with pytest.raises(ConfigError, match=r"blob: its predictions already use test-time augmentation"):
        TTAPredictor(TTAPredictor(BrightBlobDetector(), "hflip"), "flips")
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"not read: the mode is checked first")
    with pytest.raises(ConfigError, match="--tta"):
        load_predictor(weights, tta="d4")


def test_the_wrapper_answers_for_the_backend(onnx_model: Path) -> None:
    base = load_predictor(onnx_model)
    wrapped = load_predictor(onnx_model, tta="hflip")
    assert isinstance(wrapped, TTAPredictor) and not isinstance(base, TTAPredictor)
    assert (wrapped.names, wrapped.imgsz, wrapped.backend, wrapped.source) == (
        base.names, base.imgsz, base.backend, base.source)
    assert wrapped.metadata == base.metadata  # an attribute only the ONNX predictor has
    assert base.tta == "off" and wrapped.tta == "hflip"


def scans(folder: Path, n: int) -> list[np.ndarray]:
    return [load_rgb(p) for p in sorted(folder.glob("*"))[:n]]


def tiny_model_scans(tiny_model: Path, n: int) -> list[np.ndarray]:
    """Val scans of the data the tiny model trained on (real when ../shared/data is there, else synth)."""
    return scans(tiny_model.parents[2] / "data" / "images" / "val", n)


def test_a_real_model_with_flips_mirrors_with_the_scan(onnx_model: Path, tiny_model: Path) -> None:
    """The four flipped views of a mirrored scan are the four views of the scan, so the fused prediction of
    the mirrored scan is the mirrored fused prediction: a check of the whole path on a real ONNX model."""
    predictor = load_predictor(onnx_model, tta="flips")
    checked = 0
    for image in tiny_model_scans(tiny_model, 6):
        h, w = image.shape[:2]
        fused = predictor.predict(image, conf=0.001)
        mirrored = predictor.predict(np.ascontiguousarray(image[:, ::-1]), conf=0.001)
        expected = unflip_boxes(fused, (True, False), w, h)
        order_a, order_b = np.lexsort(expected.xyxy.T), np.lexsort(mirrored.xyxy.T)
        np.testing.assert_allclose(mirrored.xyxy[order_b], expected.xyxy[order_a], atol=1e-3)
        np.testing.assert_allclose(mirrored.confidence[order_b], expected.confidence[order_a], atol=1e-5)
        assert np.all(fused.confidence >= 0.001)
        assert np.all((fused.xyxy >= -1e-6) & (fused.xyxy <= [w, h, w, h]))
        checked += len(fused)
    assert checked > 0  # the tiny model does find boxes at conf 0.001


def test_batches_go_image_by_image_through_all_views(onnx_model: Path, tiny_model: Path) -> None:
    images: Sequence[np.ndarray] = tiny_model_scans(tiny_model, 3)
    predictor = load_predictor(onnx_model, tta="hflip")
    one_by_one = [predictor.predict(im, 0.001) for im in images]
    assert sum(len(d) for d in one_by_one) > 0
    for a, b in zip(predictor.predict_batch(images, 0.001), one_by_one, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy)
        np.testing.assert_allclose(a.confidence, b.confidence)
        assert a.class_id.tolist() == b.class_id.tolist()


@pytest.mark.parametrize("backend", ["onnx", "ultralytics"])  # views one by one, and as one batch
def test_an_answer_at_a_threshold_is_the_low_threshold_prediction_cut_there(
    onnx_model: Path, tiny_model: Path, backend: str
) -> None:
    """A server answers at conf 0.25, the evaluation predicts at 0.001 and cuts at 0.25 afterwards: the two
    must agree, or the report that gated a model would count boxes its server never returns."""
    predictor = load_predictor(onnx_model if backend == "onnx" else tiny_model, tta="flips")
    compared = 0
    for image in tiny_model_scans(tiny_model, 4):
        everything = predictor.predict(image, conf=0.001)
        if not len(everything):
            continue
        threshold = float(np.median(everything.confidence))  # a cut that keeps some boxes and drops others
        answer, cut = predictor.predict(image, conf=threshold), everything.with_min_confidence(threshold)
        np.testing.assert_allclose(answer.xyxy, cut.xyxy)
        np.testing.assert_allclose(answer.confidence, cut.confidence)
        assert answer.class_id.tolist() == cut.class_id.tolist()
        compared += len(answer)
    assert compared > 0


def test_flips_on_a_model_trained_without_vertical_flips_is_warned_about(tiny_model: Path, caplog) -> None:
    """The tiny model trained with Ultralytics' defaults (flipud 0). The warning comes whichever backend runs
    it: served by ONNX Runtime, the .pt is swapped for an export that no longer says how it was trained."""
    from xraydet.evaluation.runner import resolve_predictor
    from xraydet.inference.export import checkpoint_info

    assert checkpoint_info(tiny_model)["flipud"] == 0
    with caplog.at_level("WARNING", logger="xraydet.inference"):
        load_predictor(tiny_model, tta="hflip")
    assert not caplog.records
    for load in (lambda: load_predictor(tiny_model, tta="flips"),
                 lambda: resolve_predictor(tiny_model, backend="onnx", tta="flips")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="xraydet.inference"):
            predictor = load()
        assert predictor.tta == "flips"
        assert any("trained without vertical flips" in r.getMessage() for r in caplog.records)
    assert predictor.backend == "onnx"
