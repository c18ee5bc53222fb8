"""ONNX Runtime backend: pre/post-processing against Ultralytics' own, and box parity with PyTorch on real
scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xraydet.inference.base import load_rgb
from xraydet.inference.onnx_backend import OnnxPredictor, decode_output, letterbox, nms
from xraydet.structures import box_iou


@pytest.mark.parametrize("shape", [(416, 416), (300, 500), (517, 211), (20, 1000)])
def test_letterbox_matches_ultralytics(shape: tuple[int, int]) -> None:
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, _, _ = letterbox(image, (160, 160))
    theirs = LetterBox((160, 160), auto=False, stride=32)(image=image)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    ("boxes", "scores", "iou", "kept"),
    [
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], 0.5, [1]),  # duplicate: the better one stays
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], 0.5, [0, 1]),  # IoU 1/3 <= 0.5: both stay
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], 0.3, [0]),  # IoU 1/3 > 0.3: suppressed
        ([[0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 10, 10]], [0.3, 0.2, 0.4], 0.5, [2, 1]),
    ],
)
def test_nms_hand_cases(boxes: list[list[float]], scores: list[float], iou: float, kept: list[int]) -> None:
    assert nms(np.array(boxes, float), np.array(scores), iou).tolist() == kept


def test_decode_output_is_class_aware() -> None:
    # Two identical boxes of different classes both survive; a third overlapping box of class 0 is suppressed.
    raw = np.array(
        [  # cx, cy, w, h, score(class0), score(class1) per column
            [50, 50, 51],
            [50, 50, 50],
            [20, 20, 20],
            [20, 20, 20],
            [0.9, 0.1, 0.6],
            [0.1, 0.8, 0.1],
        ],
        dtype=np.float32,
    )
    xyxy, score, cls = decode_output(raw, conf=0.25, iou=0.7)
    assert cls.tolist() == [0, 1]
    np.testing.assert_allclose(score, [0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose(xyxy[0], [40, 40, 60, 60])
    assert len(decode_output(raw, conf=0.95, iou=0.7)[0]) == 0


@pytest.mark.slow
@pytest.mark.realdata
def test_onnx_matches_pytorch_on_real_scans(
    tiny_model: Path, onnx_model: Path, val_images: list[Path]
) -> None:
    from xraydet.inference.ultralytics_backend import UltralyticsPredictor

    onnx = OnnxPredictor(onnx_model, threads=2)
    torch_pred = UltralyticsPredictor(tiny_model, imgsz=160)
    assert onnx.names == torch_pred.names
    assert onnx.imgsz == 160
    # The 2-epoch model scores around 0.003, so a low threshold is what gives boxes to compare.
    conf = 0.001
    ious, score_diffs = [], []
    for path in val_images:
        image = load_rgb(path)
        a, b = onnx.predict(image, conf, 0.7), torch_pred.predict(image, conf, 0.7)
        assert len(a) == len(b), path.name
        if not len(a):
            continue
        iou = box_iou(a.xyxy, b.xyxy)
        same_class = a.class_id[:, None] == b.class_id[None, :]
        iou = np.where(same_class, iou, 0.0)
        best = iou.argmax(axis=1)
        ious.extend(iou[np.arange(len(a)), best])
        score_diffs.extend(np.abs(a.confidence - b.confidence[best]))
    assert len(ious) >= 20, "too few boxes to compare"
    assert np.mean(ious) > 0.99
    assert max(score_diffs) < 0.01


def test_onnx_predictor_rejects_non_onnx(tmp_path: Path) -> None:
    from xraydet.errors import XrayDetError

    bad = tmp_path / "model.onnx"
    bad.write_text("not a model")
    with pytest.raises(XrayDetError, match="not a loadable ONNX model"):
        OnnxPredictor(bad)
    with pytest.raises(XrayDetError, match=r"needs an \.onnx file"):
        OnnxPredictor(tmp_path / "model.pt")


@pytest.mark.slow
def test_export_metadata_carries_names_and_threats(tiny_model: Path, onnx_model: Path) -> None:
    from xraydet.inference.export import checkpoint_info

    info = checkpoint_info(tiny_model)
    pred = OnnxPredictor(onnx_model)
    assert pred.names == info["names"]
    assert pred.metadata.get("xraydet_threats") == info["threats"]
    assert pred.input_hw == (160, 160)
