"""benchmarks/box_offsets.py: the matched offsets it reports are the predictions' true displacement, and
shifting predictions back by that displacement restores the AP a bias had cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.benchmark_scripts import load_benchmark_script

from xraydet.evaluation.evaluator import Sample
from xraydet.structures import Detections


def load_script():
    return load_benchmark_script("box_offsets")


def biased_samples(dx: float, dy: float, n: int = 20) -> list[Sample]:
    """One 30x40 px label per image; the prediction is the label moved by (dx, dy), with a little scatter."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        x, y = rng.uniform(20, 300, size=2)
        gt = np.array([[x, y, x + 30, y + 40]])
        jitter = rng.normal(0, 0.2, size=(1, 4))
        pred = gt + np.array([dx, dy, dx, dy]) + jitter
        samples.append(
            Sample(
                Path(f"img{i}.jpg"),
                416,
                416,
                Detections(gt, np.array([i % 2])),
                Detections(pred, np.array([i % 2]), np.array([0.9])),
            )
        )
    return samples


def test_matched_offsets_recover_a_known_bias_and_shifting_it_back_restores_ap75() -> None:
    bo = load_script()
    dx, dy = (
        4.0,
        -2.5,
    )  # IoU of the biased box with its 30x40 label: (26 * 37.5) / (2 * 1200 - 26 * 37.5) = 0.68
    samples = biased_samples(dx, dy)
    offsets, ious = bo.matched_offsets(samples)
    assert len(offsets) == len(samples)
    centre = (offsets[:, :2] + offsets[:, 2:]) / 2
    assert np.allclose(centre.mean(axis=0), [dx, dy], atol=0.15)
    assert np.allclose(np.median(ious), (26 * 37.5) / (2 * 1200 - 26 * 37.5), atol=0.02)
    names = ["knife", "scissors"]
    biased = bo.box_metrics(samples, names)
    corrected = bo.box_metrics(bo.shifted(samples, -dx, -dy), names)
    assert biased["map50"] == 1.0 and biased["map75"] == 0.0  # found, but below IoU 0.75
    assert corrected["map75"] == 1.0 and corrected["map50_95"] > biased["map50_95"]


def test_predictions_below_the_match_confidence_or_overlap_are_not_matched() -> None:
    bo = load_script()
    gt = np.array([[10.0, 10, 40, 50]])
    far = Sample(
        Path("a.jpg"),
        100,
        100,
        Detections(gt, np.array([0])),
        Detections(gt + 100, np.array([0]), np.array([0.9])),
    )
    faint = Sample(
        Path("b.jpg"),
        100,
        100,
        Detections(gt, np.array([0])),
        Detections(gt.copy(), np.array([0]), np.array([bo.MATCH_CONF / 2])),
    )
    other_class = Sample(
        Path("c.jpg"),
        100,
        100,
        Detections(gt, np.array([0])),
        Detections(gt.copy(), np.array([1]), np.array([0.9])),
    )
    offsets, ious = bo.matched_offsets([far, faint, other_class])
    assert offsets.shape == (0, 4) and len(ious) == 0
