"""Screening metrics, the threshold sweep and the evaluator group, on hand-made bags with known answers."""

from __future__ import annotations

import pytest
from tests.evaluation.cases import NAMES, gt, pred, sample

from xraydet.evaluation.evaluator import DatasetEvaluator, EvaluatorGroup
from xraydet.evaluation.screening import BagScores, ScreeningEvaluator, bag_scores
from xraydet.evaluation.sweep import SweepEvaluator, pick_threshold, sweep_points

KNIFE, GUN, BOTTLE = 0, 1, 2
THREAT_IDS = {KNIFE, GUN}
BOX = (10.0, 10.0, 30.0, 30.0)
FAR = (60.0, 60.0, 80.0, 80.0)
NEAR = (20.0, 10.0, 40.0, 30.0)  # IoU 1/3 with BOX: overlaps, far from a tight box


def screen(samples, conf=0.25):
    ev = ScreeningEvaluator(NAMES, THREAT_IDS, conf)
    for s in samples:
        ev.process(s)
    return ev.evaluate()["screening"]


BAGS = [
    # id, sample, detected (overlap), detected (any threat box), false alarm (threat-free bags only)
    ("hit", sample(gt((KNIFE, BOX)), pred((KNIFE, BOX, 0.9))), True, True, None),
    ("other_threat_class_on_the_threat", sample(gt((KNIFE, BOX)), pred((GUN, BOX, 0.9))), True, True, None),
    ("loose_overlap_counts", sample(gt((KNIFE, BOX)), pred((KNIFE, NEAR, 0.9))), True, True, None),
    ("threat_box_elsewhere", sample(gt((KNIFE, BOX)), pred((KNIFE, FAR, 0.9))), False, True, None),
    ("below_threshold", sample(gt((GUN, BOX)), pred((GUN, BOX, 0.2))), False, False, None),
    ("non_threat_box_on_threat", sample(gt((KNIFE, BOX)), pred((BOTTLE, BOX, 0.9))), False, False, None),
    ("missed", sample(gt((GUN, BOX)), pred()), False, False, None),
    ("negative_with_knife", sample(gt(), pred((KNIFE, FAR, 0.3)), negative=True), None, None, True),
    ("negative_with_bottle", sample(gt(), pred((BOTTLE, FAR, 0.9)), negative=True), None, None, False),
    ("negative_quiet_enough", sample(gt(), pred((GUN, FAR, 0.1)), negative=True), None, None, False),
    ("bottle_only_bag_with_gun_box", sample(gt((BOTTLE, BOX)), pred((GUN, FAR, 0.5))), None, None, True),
]


@pytest.mark.parametrize(("s", "hit", "hit_any", "alarm"), [b[1:] for b in BAGS], ids=[b[0] for b in BAGS])
def test_each_bag(s, hit, hit_any, alarm):
    r = screen([s])
    if hit is not None:
        assert r["n_threat_bags"] == 1 and r["n_threat_free_bags"] == 0
        assert r["threat_detection_rate"] == float(hit)
        assert r["threat_detection_rate_any"] == float(hit_any)
        assert r["false_alarm_rate"] is None  # nothing threat-free was seen: not measured
    else:
        assert r["n_threat_bags"] == 0 and r["threat_detection_rate"] is None
        assert r["false_alarm_rate"] == float(alarm)


def test_all_bags_together():
    r = screen([b[1] for b in BAGS])
    threat = [b for b in BAGS if b[2] is not None]
    clean = [b for b in BAGS if b[2] is None]
    assert r["n_threat_bags"] == len(threat) == 7
    assert r["threats_found"] == 3 and r["threat_detection_rate"] == pytest.approx(3 / 7)
    assert r["threats_found_any"] == 4 and r["threat_detection_rate_any"] == pytest.approx(4 / 7)
    assert r["n_threat_free_bags"] == len(clean) == 4 and r["n_negative_bags"] == 3
    assert r["false_alarms"] == 2 and r["false_alarm_rate"] == pytest.approx(2 / 4)
    assert r["false_alarm_rate_negatives"] == pytest.approx(1 / 3)
    # boxes at >= 0.25 on the 8 dataset bags: 1+1+1+1+0+1+0+1 = 6
    assert r["avg_detections"] == pytest.approx(6 / 8)
    assert r["avg_detections_negatives"] == pytest.approx(2 / 3)


ACCURACY = [
    ("top_box_is_first_label", gt((GUN, BOX), (KNIFE, FAR)), pred((GUN, BOX, 0.9), (KNIFE, FAR, 0.8)), True),
    (
        "top_box_is_second_label",
        gt((GUN, BOX), (KNIFE, FAR)),
        pred((KNIFE, FAR, 0.9), (GUN, BOX, 0.8)),
        False,
    ),
    ("no_box_is_wrong", gt((KNIFE, BOX)), pred(), False),
    ("box_below_threshold_is_wrong", gt((KNIFE, BOX)), pred((KNIFE, BOX, 0.1)), False),
    ("class_counts_not_place", gt((BOTTLE, BOX)), pred((BOTTLE, FAR, 0.5)), True),
]


@pytest.mark.parametrize(("g", "p", "correct"), [a[1:] for a in ACCURACY], ids=[a[0] for a in ACCURACY])
def test_seed_accuracy(g, p, correct):
    r = screen([sample(g, p)])
    assert r["accuracy"] == float(correct)
    assert r["per_class_accuracy"] == {NAMES[int(g.class_id[0])]: float(correct)}
    assert r["accuracy_label"] == "seed accuracy (top-1 box class = first label)"


def test_seed_accuracy_per_class_and_excludes_unlabelled():
    r = screen(
        [sample(a[1], a[2]) for a in ACCURACY] + [sample(gt(), pred((KNIFE, BOX, 0.9)), negative=True)]
    )
    assert r["n_accuracy_images"] == 5
    assert r["accuracy"] == pytest.approx(2 / 5)
    assert r["per_class_accuracy"] == {"knife": 0.0, "gun": 0.5, "bottle": 1.0}


def test_bag_scores_take_best_overlapping_threat_box():
    s = sample(
        gt((KNIFE, BOX)), pred((KNIFE, FAR, 0.95), (GUN, NEAR, 0.4), (KNIFE, BOX, 0.3), (BOTTLE, BOX, 0.99))
    )
    assert bag_scores(s, THREAT_IDS) == BagScores(True, 0.4, 0.95)
    assert bag_scores(s, THREAT_IDS, overlap_iou=0.5) == BagScores(True, 0.3, 0.95)


SWEEP_BAGS = [BagScores(True, h, h) for h in (0.9, 0.6, 0.3, 0.0)] + [
    BagScores(False, 0, a) for a in (0.5, 0.2, 0.0)
]


@pytest.mark.parametrize(
    ("target", "threshold", "detection", "false_alarms"),
    [
        (0.75, 0.30, 0.75, 1 / 3),  # 3 of 4 threats need t <= 0.3; the 0.5 clean bag still alarms
        (0.50, 0.60, 0.50, 0.0),  # t in (0.5, 0.6] keeps 2 threats and silences every clean bag
        (0.25, 0.90, 0.25, 0.0),  # ties on false alarms go to the highest threshold
        (1.00, None, None, None),  # one threat bag has no box at all: unreachable
    ],
)
def test_sweep_picks_lowest_false_alarm_rate_meeting_target(target, threshold, detection, false_alarms):
    best = pick_threshold(sweep_points(SWEEP_BAGS), target)
    if threshold is None:
        assert best is None
        return
    assert best["threshold"] == pytest.approx(threshold)
    assert best["detection_rate"] == pytest.approx(detection)
    assert best["false_alarm_rate"] == pytest.approx(false_alarms)


def test_sweep_evaluator_from_samples():
    samples = [
        sample(gt((KNIFE, BOX)), pred((KNIFE, BOX, 0.82))),
        sample(gt((GUN, BOX)), pred((GUN, BOX, 0.41), (GUN, FAR, 0.9))),
        sample(gt(), pred((KNIFE, FAR, 0.55)), negative=True),
        sample(gt(), pred(), negative=True),
    ]
    ev = SweepEvaluator(THREAT_IDS, target_detection=1.0)
    for s in samples:
        ev.process(s)
    sweep = ev.evaluate()["sweep"]
    assert sweep["recommended_threshold"] == pytest.approx(0.41)
    at = {p["threshold"]: p for p in sweep["points"]}
    assert at[0.5] == {
        "threshold": 0.5,
        "detection_rate": 0.5,
        "detection_rate_any": 1.0,
        "false_alarm_rate": 0.5,
    }
    assert at[0.6]["false_alarm_rate"] == 0.0 and at[0.9]["detection_rate_any"] == 0.5


def test_sweep_without_threat_free_bags_says_so():
    ev = SweepEvaluator(THREAT_IDS, target_detection=0.5)
    ev.process(sample(gt((KNIFE, BOX)), pred((KNIFE, BOX, 0.7))))
    sweep = ev.evaluate()["sweep"]
    assert sweep["recommended_threshold"] == pytest.approx(0.7)
    assert sweep["recommended"]["false_alarm_rate"] is None
    assert "false-alarm rate is unknown" in sweep["note"]


class _Fixed(DatasetEvaluator):
    def __init__(self, task: str):
        self.task, self.seen = task, 0

    def reset(self):
        self.seen = 0

    def process(self, sample):
        self.seen += 1

    def evaluate(self):
        return {self.task: {"seen": self.seen}}


def test_group_merges_and_resets():
    group = EvaluatorGroup([_Fixed("a"), _Fixed("b")])
    for _ in range(3):
        group.process(sample(gt(), pred()))
    assert group.evaluate() == {"a": {"seen": 3}, "b": {"seen": 3}}
    group.reset()
    assert group.evaluate() == {"a": {"seen": 0}, "b": {"seen": 0}}


def test_group_rejects_duplicate_task_keys():
    group = EvaluatorGroup([_Fixed("box"), _Fixed("box")])
    with pytest.raises(ValueError, match="two evaluators report task 'box'"):
        group.evaluate()


def test_overlap_exactly_at_overlap_iou_counts():
    """A knife box overlapping the knife label at IoU exactly 0.1 (and 0.5) is a hit at that overlap."""
    s = sample(gt((KNIFE, (0, 0, 10, 10))), pred((KNIFE, (0, 0, 1, 10), 0.9)))
    assert bag_scores(s, THREAT_IDS).hit_score == pytest.approx(0.9)  # default overlap 0.1
    assert bag_scores(s, THREAT_IDS, 0.1).hit_score == pytest.approx(0.9)
    assert bag_scores(s, THREAT_IDS, 0.11).hit_score == 0.0
    half = sample(gt((KNIFE, (0, 0, 10, 10))), pred((KNIFE, (0, 0, 5, 10), 0.9)))
    assert bag_scores(half, THREAT_IDS, 0.5).hit_score == pytest.approx(0.9)
    assert screen([s])["threat_detection_rate"] == 1.0


def test_seed_accuracy_uses_the_most_confident_box_not_the_first():
    """The wrong-class box comes first but scores lower: the top-1 box is the gun, which is right."""
    r = screen([sample(gt((GUN, BOX)), pred((KNIFE, FAR, 0.5), (GUN, BOX, 0.9)))])
    assert r["accuracy"] == 1.0
    r = screen([sample(gt((KNIFE, BOX)), pred((GUN, FAR, 0.5), (KNIFE, BOX, 0.4), (GUN, BOX, 0.8)))])
    assert r["accuracy"] == 0.0
