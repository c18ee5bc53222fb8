"""Weighted box fusion: hand-computed cases, its invariances, and that it tightens noisy boxes."""

from __future__ import annotations

import numpy as np
import pytest

from xraydet.inference.box_fusion import weighted_box_fusion
from xraydet.structures import Detections, box_iou


def dets(boxes: list[list[float]], classes: list[int], scores: list[float]) -> Detections:
    return Detections(np.array(boxes, float).reshape(-1, 4), np.array(classes), np.array(scores))


def test_agreeing_views_are_averaged_by_score() -> None:
    a = dets([[10, 10, 50, 50]], [0], [0.8])
    b = dets([[14, 10, 54, 50]], [0], [0.2])
    fused = weighted_box_fusion([a, b])
    # corners: (0.8 * 10 + 0.2 * 14) / 1.0 = 10.8 ...; score: mean 0.5, seen by 2 of 2 views
    np.testing.assert_allclose(fused.xyxy, [[10.8, 10.0, 50.8, 50.0]])
    np.testing.assert_allclose(fused.confidence, [0.5])
    assert fused.class_id.tolist() == [0]


def test_a_box_only_some_views_saw_is_scored_down() -> None:
    a = dets([[10, 10, 50, 50], [100, 100, 120, 130]], [0, 1], [0.9, 0.6])
    b = dets([[10, 10, 50, 50]], [0], [0.7])
    fused = weighted_box_fusion([a, b, Detections.empty(with_confidence=True)])
    by_class = {int(c): (box.tolist(), s) for box, c, s in fused}
    assert by_class[0][1] == pytest.approx((0.9 + 0.7) / 2 * 2 / 3)
    assert by_class[1] == ([100.0, 100.0, 120.0, 130.0], pytest.approx(0.6 / 3))
    assert np.all(np.diff(fused.confidence) <= 0)  # sorted by score


def test_weaker_boxes_a_view_leaves_around_an_object_do_not_lower_its_score() -> None:
    # NMS at IoU 0.7 keeps a 0.02 box overlapping the 0.8 one by 0.6: it joins the object's cluster
    a = dets([[10, 10, 50, 50], [10, 10, 50, 76.67]], [0, 0], [0.8, 0.02])
    b = dets([[10, 10, 50, 50]], [0], [0.6])
    fused = weighted_box_fusion([a, b])
    assert len(fused) == 1
    np.testing.assert_allclose(fused.confidence, [(0.8 + 0.6) / 2])  # each view's best member
    # the weak box still counts in the corners, by its small weight
    np.testing.assert_allclose(fused.xyxy, [[10, 10, 50, 50 + 26.67 * 0.02 / 1.42]])
    with pytest.raises(ValueError, match=r"n_views must be at least 1 and the number of predictions \(2\)"):
        weighted_box_fusion([a, b], n_views=1)


def test_classes_never_fuse_and_distant_boxes_stay_apart() -> None:
    same_place = [dets([[0, 0, 10, 10]], [0], [0.9]), dets([[0, 0, 10, 10]], [1], [0.9])]
    assert sorted(weighted_box_fusion(same_place).class_id.tolist()) == [0, 1]
    # IoU 1/3 is not above the threshold 0.55: two objects; above a threshold of 0.3: one
    apart = [dets([[0, 0, 10, 10]], [0], [0.9]), dets([[5, 0, 15, 10]], [0], [0.8])]
    assert len(weighted_box_fusion(apart)) == 2
    assert len(weighted_box_fusion(apart, iou_threshold=0.3)) == 1


def test_a_cluster_is_matched_against_its_running_mean() -> None:
    # b overlaps a by IoU 0.6 and joins it; the mean moves right, so c (IoU 0.5 with a alone) joins too
    a, b, c = [dets([[x, 0, x + 10, 10]], [0], [1.0]) for x in (0.0, 2.5, 3.33)]
    assert box_iou(a.xyxy, c.xyxy)[0, 0] < 0.55
    fused = weighted_box_fusion([a, b, c])
    assert len(fused) == 1
    np.testing.assert_allclose(fused.xyxy, [[(0 + 2.5 + 3.33) / 3, 0, (0 + 2.5 + 3.33) / 3 + 10, 10]])


def test_one_view_of_separate_boxes_comes_back_unchanged() -> None:
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 400, (30, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, (30, 2))], axis=1)
    pred = Detections(boxes, rng.integers(0, 3, 30), rng.uniform(0.01, 1, 30))
    keep = [i for i in range(len(pred)) if not any(
        pred.class_id[j] == pred.class_id[i] and box_iou(boxes[i], boxes[j])[0, 0] > 0.55
        for j in range(len(pred)) if j != i)]
    pred = pred[keep]
    fused = weighted_box_fusion([pred])
    expected = pred.sorted_by_confidence()
    np.testing.assert_allclose(fused.xyxy, expected.xyxy)
    np.testing.assert_allclose(fused.confidence, expected.confidence)
    assert fused.class_id.tolist() == expected.class_id.tolist()


def test_the_order_of_the_views_does_not_matter() -> None:
    rng = np.random.default_rng(1)
    truth = np.array([[50, 60, 90, 140], [200, 210, 230, 300], [300, 20, 380, 60]], float)
    views = [Detections(truth + rng.normal(0, 2, truth.shape), np.array([0, 1, 0]), rng.uniform(0.3, 1, 3))
             for _ in range(4)]
    forward, backward = weighted_box_fusion(views), weighted_box_fusion(views[::-1])
    np.testing.assert_allclose(forward.xyxy, backward.xyxy)
    np.testing.assert_allclose(forward.confidence, backward.confidence)


def test_fusing_noisy_views_lands_closer_to_the_truth_than_each_view() -> None:
    rng = np.random.default_rng(2)
    truth = np.array([[100.0, 100.0, 135.0, 149.0]])  # a median OPIXray threat, 35 x 49 px
    view_errors, fused_errors = [], []
    for _ in range(200):
        views = [Detections(truth + rng.normal(0, 1.7, (1, 4)), [0], [rng.uniform(0.5, 1)]) for _ in range(4)]
        view_errors += [np.abs(v.xyxy - truth).mean() for v in views]
        fused = weighted_box_fusion(views)
        assert len(fused) == 1
        fused_errors.append(np.abs(fused.xyxy - truth).mean())
    # independent errors average out: about 1/sqrt(4) of one view's
    assert np.median(fused_errors) < 0.6 * np.median(view_errors)


def test_nothing_to_fuse_and_bad_arguments() -> None:
    assert len(weighted_box_fusion([])) == 0
    assert weighted_box_fusion([Detections.empty(with_confidence=True)] * 2).confidence is not None
    with pytest.raises(ValueError, match="iou_threshold"):
        weighted_box_fusion([dets([[0, 0, 1, 1]], [0], [1.0])], iou_threshold=1.0)
    with pytest.raises(ValueError, match="n_views"):
        weighted_box_fusion([dets([[0, 0, 1, 1]], [0], [1.0])], n_views=0)
    with pytest.raises(ValueError, match="needs a confidence"):
        weighted_box_fusion([Detections(np.array([[0, 0, 1, 1]]), np.array([0]))])
