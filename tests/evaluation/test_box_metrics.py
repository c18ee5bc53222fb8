"""Box metrics on hand-made cases with known answers, and against pycocotools (synthetic and real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.evaluation.cases import NAMES, gt, pred, sample
from tests.evaluation.coco_reference import coco_ap

from xraydet.evaluation.box_metrics import BoxEvaluator, confusion_update, match_class
from xraydet.evaluation.evaluator import Sample
from xraydet.structures import Detections

BOX = (10.0, 10.0, 30.0, 30.0)
FAR = (60.0, 60.0, 80.0, 80.0)


def run_box(samples: list[Sample], conf: float = 0.25) -> dict:
    ev = BoxEvaluator(NAMES, conf)
    for s in samples:
        ev.process(s)
    return ev.evaluate()["box"]


CASES = [
    # id, samples, expected mAP50, expected mAP50-95, expected per-class AP50 (knife, gun, bottle)
    ("perfect", [sample(gt((0, BOX)), pred((0, BOX, 0.9)))], 1.0, 1.0, (1.0, None, None)),
    (
        "iou_0.4_is_a_miss",
        [sample(gt((0, (0, 0, 10, 10))), pred((0, (0, 0, 4, 10), 0.9)))],
        0.0,
        0.0,
        (0.0, None, None),
    ),
    # IoU 0.72 passes the thresholds 0.50 ... 0.70 (5 of 10): AP50-95 = 0.5
    (
        "iou_0.72",
        [sample(gt((0, (0, 0, 10, 10))), pred((0, (0, 0, 7.2, 10), 0.9)))],
        1.0,
        0.5,
        (1.0, None, None),
    ),
    (
        "two_classes_one_missed",
        [sample(gt((0, BOX), (1, FAR)), pred((0, BOX, 0.9)))],
        0.5,
        0.5,
        (1.0, 0.0, None),
    ),
    (
        "false_positive_ranked_first",
        [sample(gt((0, BOX)), pred((0, FAR, 0.9), (0, BOX, 0.8)))],
        0.5,
        0.5,
        (0.5, None, None),
    ),
    (
        "false_positive_ranked_last",
        [sample(gt((0, BOX)), pred((0, BOX, 0.9), (0, FAR, 0.8)))],
        1.0,
        1.0,
        (1.0, None, None),
    ),
    # recall stops at 0.5: recall points 0.00 ... 0.50 (51 of 101) have precision 1
    (
        "half_recall",
        [sample(gt((0, BOX), (0, FAR)), pred((0, BOX, 0.9)))],
        51 / 101,
        51 / 101,
        (51 / 101, None, None),
    ),
    ("wrong_class_same_place", [sample(gt((0, BOX)), pred((1, BOX, 0.9)))], 0.0, 0.0, (0.0, None, None)),
    (
        "duplicate_ranked_low",
        [sample(gt((0, BOX)), pred((0, BOX, 0.9), (0, BOX, 0.5)))],
        1.0,
        1.0,
        (1.0, None, None),
    ),
    ("no_predictions", [sample(gt((0, BOX)), pred())], 0.0, 0.0, (0.0, None, None)),
    # across images: the false positive on image 2 outranks the hit on image 1
    (
        "pooled_across_images",
        [sample(gt((0, BOX)), pred((0, BOX, 0.7))), sample(gt(), pred((0, FAR, 0.8)))],
        0.5,
        0.5,
        (0.5, None, None),
    ),
]


@pytest.mark.parametrize(
    ("samples", "map50", "map50_95", "per_class"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_known_answers(samples, map50, map50_95, per_class):
    box = run_box(samples)
    assert box["map50"] == pytest.approx(map50, abs=1e-9)
    assert box["map50_95"] == pytest.approx(map50_95, abs=1e-9)
    for name, expected in zip(NAMES, per_class, strict=True):
        assert box["per_class_ap50"][name] == (
            None if expected is None else pytest.approx(expected, abs=1e-9)
        )


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two xyxy boxes, worked out here rather than by the code under test."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_ap_by_iou_threshold_tells_tight_boxes_from_loose_ones():
    """A knife box shifted by 1.3 px (IoU 8.7/11.3 = 0.77) and a gun box shifted by 1.6 px (IoU 8.4/11.6 =
    0.72), each the only box of its class: AP is 1 at every threshold the IoU reaches and 0 above it. The
    IoUs straddle 0.75 and sit inside the neighbouring steps, so AP at 0.70 or 0.80 taken for AP75 would
    give a mAP75 of 1 or 0, not 0.5."""
    knife, gun = (0.0, 0.0, 10.0, 10.0), (50.0, 50.0, 60.0, 60.0)
    knife_pred, gun_pred = (1.3, 0.0, 11.3, 10.0), (51.6, 50.0, 61.6, 60.0)
    iou_knife, iou_gun = _iou(knife, knife_pred), _iou(gun, gun_pred)
    assert iou_knife == pytest.approx(8.7 / 11.3) and iou_gun == pytest.approx(8.4 / 11.6)
    thresholds = [0.5 + 0.05 * k for k in range(10)]
    # neither IoU sits on a threshold, so float steps cannot flip a hit
    assert min(abs(iou - t) for iou in (iou_knife, iou_gun) for t in thresholds) > 0.01
    box = run_box([sample(gt((0, knife), (1, gun)), pred((0, knife_pred, 0.9), (1, gun_pred, 0.8)))])

    assert box["iou_thresholds"] == pytest.approx(thresholds)
    expected = {
        "knife": [1.0 if iou_knife >= t else 0.0 for t in thresholds],  # hits at 0.50 ... 0.75
        "gun": [1.0 if iou_gun >= t else 0.0 for t in thresholds],  # hits at 0.50 ... 0.70
    }
    assert expected["knife"][5] == 1.0 and expected["gun"][5] == 0.0  # 0.75 separates the two
    by_iou = box["per_class_ap_by_iou"]
    assert by_iou == {
        "knife": pytest.approx(expected["knife"]),
        "gun": pytest.approx(expected["gun"]),
        "bottle": None,
    }
    for aps in (by_iou["knife"], by_iou["gun"]):
        assert len(aps) == 10 and aps == sorted(aps, reverse=True)
    assert box["map75"] == pytest.approx((1.0 + 0.0) / 2)
    assert box["map50"] == pytest.approx(1.0)
    assert box["map50_95"] == pytest.approx((sum(expected["knife"]) + sum(expected["gun"])) / 20)
    assert box["per_class_ap50_95"]["knife"] == pytest.approx(sum(expected["knife"]) / 10)


def test_without_labels_the_means_are_not_measured_and_classes_have_no_ap_by_iou():
    box = run_box([sample(gt(), pred((0, BOX, 0.9)))])
    assert (box["map50"], box["map75"], box["map50_95"], box["precision"], box["recall"]) == (None,) * 5
    assert box["per_class_ap_by_iou"] == {n: None for n in NAMES}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_known_answers_agree_with_pycocotools(case):
    _, samples, map50, map50_95, _ = case
    ref = coco_ap(samples, len(NAMES))
    assert ref["map50"] == pytest.approx(map50, abs=1e-9)
    assert ref["map50_95"] == pytest.approx(map50_95, abs=1e-9)


def test_precision_recall_at_operating_threshold():
    # two knives: hit (0.9), false alarm (0.8), hit below the threshold (0.1)
    s = sample(gt((0, BOX), (0, FAR)), pred((0, BOX, 0.9), (0, (40, 40, 50, 50), 0.8), (0, FAR, 0.1)))
    box = run_box([s], conf=0.25)
    assert box["per_class_precision"]["knife"] == pytest.approx(0.5)
    assert box["per_class_recall"]["knife"] == pytest.approx(0.5)
    # mAP still sees the low-confidence hit: recall reaches 1 with precision 2/3
    assert box["map50"] > 0.8
    assert run_box([s], conf=0.05)["per_class_recall"]["knife"] == pytest.approx(1.0)


def test_negatives_do_not_enter_box_metrics():
    box = run_box(
        [sample(gt((0, BOX)), pred((0, BOX, 0.9))), sample(gt(), pred((0, FAR, 0.99)), negative=True)]
    )
    assert box["map50"] == pytest.approx(1.0)
    assert box["n_images"] == 1


def test_confusion_matrix_cells():
    m = np.zeros((4, 4), dtype=np.int64)
    g = gt((0, BOX), (2, FAR))  # knife, bottle
    p = pred((1, BOX, 0.9), (0, (40, 0, 50, 8), 0.8))  # gun on the knife, knife on nothing
    confusion_update(m, g, p)
    assert m[0, 1] == 1  # true knife predicted gun
    assert m[2, 3] == 1  # bottle missed -> background column
    assert m[3, 0] == 1  # knife on background
    assert m.sum() == 3


def test_match_prefers_highest_iou_unmatched_box():
    g = np.array([[0, 0, 10, 10], [0, 0, 12, 10]], float)
    p = np.array([[0, 0, 12, 10], [0, 0, 10, 10]], float)
    tp = match_class(g, p, np.array([0.9, 0.8]), np.array([0.9]))
    assert tp.tolist() == [[True, True]]


def _random_samples(rng: np.random.Generator, n_images: int) -> list[Sample]:
    samples = []
    for i in range(n_images):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(8, 60, (n, 2))
        g = Detections(np.concatenate([xy, xy + wh], 1), rng.integers(0, 3, n))
        boxes, classes, scores = [], [], []
        for b, c, _ in g:
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.12, 4) * np.r_[b[2:] - b[:2], b[2:] - b[:2]]
                boxes.append(b + jitter)
                classes.append(c if rng.random() < 0.85 else int(rng.integers(0, 3)))
                scores.append(rng.uniform(0.05, 1))
        for _ in range(int(rng.integers(0, 4))):
            o = rng.uniform(0, 170, 2)
            boxes.append(np.r_[o, o + rng.uniform(5, 40, 2)])
            classes.append(int(rng.integers(0, 3)))
            scores.append(rng.uniform(0.001, 0.9))
        p = Detections(np.array(boxes).reshape(-1, 4), np.array(classes, int), np.array(scores))
        samples.append(Sample(Path(f"{i}.png"), 200, 200, g, p))
    return samples


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_pycocotools(seed):
    samples = _random_samples(np.random.default_rng(seed), 40)
    ours, ref = run_box(samples), coco_ap(samples, len(NAMES))
    assert ours["map50"] == pytest.approx(ref["map50"], abs=1e-6)
    assert ours["map50_95"] == pytest.approx(ref["map50_95"], abs=1e-6)
    assert ours["map75"] == pytest.approx(ref["map75"], abs=1e-6)
    for k, name in enumerate(NAMES):
        expected = ref["per_class_ap50"][k]
        assert ours["per_class_ap50"][name] == (
            None if expected is None else pytest.approx(expected, abs=1e-6)
        )
        by_iou = ref["per_class_ap_by_iou"][k]
        assert ours["per_class_ap_by_iou"][name] == (
            None if by_iou is None else pytest.approx(by_iou, abs=1e-6)
        )


@pytest.mark.realdata
@pytest.mark.slow
def test_real_predictions_match_pycocotools(tiny_model, opixray_yaml):
    """The tiny model's real predictions on real val scans, plus noisy copies of the real labels (so AP is far
    from 0), scored by us and by pycocotools."""
    from xraydet.data.dataset import load_dataset
    from xraydet.evaluation.runner import predict_samples, resolve_predictor, select_images

    ds = load_dataset(opixray_yaml)
    images = select_images(ds.images("val"), 40, seed=3)
    predictor = resolve_predictor(tiny_model)
    real = list(predict_samples(predictor, ds, [(p, "dataset") for p in images]))
    assert sum(len(s.pred) for s in real) > 0, "the tiny model should return low-confidence boxes"
    rng = np.random.default_rng(0)
    mixed = []
    for s in real:
        size = s.gt.xyxy[:, 2:] - s.gt.xyxy[:, :2]
        noisy = s.gt.xyxy + rng.normal(0, 0.15, s.gt.xyxy.shape) * np.tile(size, 2)
        p = Detections(
            np.concatenate([s.pred.xyxy, noisy]),
            np.concatenate([s.pred.class_id, s.gt.class_id]),
            np.concatenate([s.pred.confidence, rng.uniform(0.001, 1, len(s.gt))]),
        )
        mixed.append(Sample(s.image, s.width, s.height, s.gt, p))
    ev = BoxEvaluator(ds.names)
    for batch in (real, mixed):
        ev.reset()
        for s in batch:
            ev.process(s)
        ours, ref = ev.evaluate()["box"], coco_ap(batch, len(ds.names))
        assert abs(ours["map50"] - ref["map50"]) < 0.01
        assert abs(ours["map50_95"] - ref["map50_95"]) < 0.01
    assert ours["map50"] > 0.2  # the noisy labels make the mixed case informative


def test_iou_exactly_at_the_threshold_is_a_match():
    """pred (0,0,5,10) on gt (0,0,10,10): IoU exactly 0.5 counts at 0.5, as in pycocotools."""
    g = np.array([[0, 0, 10, 10]], float)
    p = np.array([[0, 0, 5, 10]], float)
    tp = match_class(g, p, np.array([0.9]), np.array([0.5, 0.55]))
    assert tp.tolist() == [[True], [False]]
    box = run_box([sample(gt((0, (0, 0, 10, 10))), pred((0, (0, 0, 5, 10), 0.9)))])
    assert box["map50"] == pytest.approx(1.0)


def test_confusion_pairs_a_prediction_with_its_highest_iou_label():
    """One gun box overlaps a knife label (IoU 1.0) and a gun label (IoU 10/14): it pairs with the knife."""
    m = np.zeros((4, 4), dtype=np.int64)
    g = gt((1, (0, 0, 10, 14)), (0, (0, 0, 10, 10)))  # gun, knife
    p = pred((1, (0, 0, 10, 10), 0.9))
    confusion_update(m, g, p)
    assert m[0, 1] == 1  # true knife predicted gun
    assert m[1, 3] == 1  # the gun label is left unpaired: missed
    assert m.sum() == 2


def test_confusion_matrix_counts_only_boxes_at_or_above_conf():
    """A 0.05-score gun on nothing stays out of the matrix at conf 0.25 (it still enters AP)."""
    ev = BoxEvaluator(NAMES, 0.25)
    ev.process(sample(gt((0, BOX)), pred((0, BOX, 0.9), (1, FAR, 0.05))))
    box = ev.evaluate()["box"]
    m = np.array(box["confusion_matrix"])
    assert m[0, 0] == 1
    assert m[3, 1] == 0  # the low-score gun is not a background -> gun cell
    assert m.sum() == 1
