"""``xraydet data stats``: counts and box sizes of a hand-made set whose answers are known, and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraydet.data.stats import StatsBuilder, box_size_stats, dataset_stats, imbalance, plot_stats

# 200 x 100 px images: a 0.1 x 0.1 box is 200 px² (small), 0.5 x 0.5 5,000 (medium), 1 x 1 20,000 (large).
SPLITS = {
    "train": {
        "a": ["0 0.5 0.5 0.1 0.1", "0 0.5 0.5 0.5 0.5", "1 0.5 0.5 1 1"],
        "b": ["0 0.2 0.2 0.1 0.1"],
        "bg": None,
        "empty": [],
    },
    "val": {"c": ["1 0.5 0.5 0.5 0.5", "1 0.3 0.3 0.1 0.1"]},
}


@pytest.fixture
def known_set(yolo_set) -> Path:
    return yolo_set("known", ["knife", "gun", "bottle"], SPLITS, size=(200, 100))


def test_counts_and_sizes_of_a_known_set(known_set: Path) -> None:
    stats = dataset_stats(known_set)
    train, val = stats.splits["train"], stats.splits["val"]
    assert (train.images, train.background, train.instances, train.images_per_class) == (
        4,
        2,
        [3, 1, 0],
        [2, 1, 0],
    )
    assert (val.images, val.background, val.instances, val.images_per_class) == (1, 0, [0, 2, 0], [0, 1, 0])
    assert stats.instances_per_class() == [3, 3, 0] and stats.n_images == 5 and stats.n_instances == 6
    b = stats.box_sizes
    assert (b.boxes, b.small, b.medium, b.large, b.unknown_px) == (6, 3, 2, 1, 0)
    assert b.small_share == pytest.approx(0.5)
    assert b.rel_area_quantiles["p50"] == pytest.approx(np.median([0.01, 0.25, 1, 0.01, 0.25, 0.01]))
    assert sum(b.rel_area_hist) == 6
    knife, gun, bottle = stats.class_box_sizes
    assert (knife.small, knife.medium, gun.large, bottle.boxes) == (2, 1, 1, 0)
    assert dataset_stats(known_set, splits=["val"]).n_images == 1


def test_builder_without_image_size_counts_relative_only() -> None:
    b = StatsBuilder(["a"])
    b.add("train", [0, 0, 5], np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]))  # id 5 is not a class: ignored
    s = b.finish()
    assert s.splits["train"].instances == [2]
    assert (s.box_sizes.boxes, s.box_sizes.unknown_px, s.box_sizes.small_share) == (2, 2, None)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([100, 5, 40], (0.05, 1, 0)),
        ([3, 3], (1.0, 0, 0)),
        ([0, 0], (None, None, None)),
        ([], (None, None, None)),
    ],
)
def test_imbalance(counts: list[int], expected: tuple) -> None:
    assert imbalance(counts) == expected


def test_box_size_buckets_edges() -> None:
    s = box_size_stats(np.array([0.1, 0.1, 0.1]), np.array([32**2 - 1, 32**2, 96**2]))
    assert (s.small, s.medium, s.large) == (1, 1, 1)


def test_plot_is_a_png(known_set: Path, tmp_path: Path) -> None:
    out = plot_stats(dataset_stats(known_set), tmp_path / "plots" / "stats.png", title="known")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_cli_stats_json_and_plot(known_set: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    result = CliRunner().invoke(
        app, ["data", "stats", str(known_set), "--json", "--plot", str(tmp_path / "s.png")]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["splits"]["train"]["instances"] == [3, 1, 0] and body["box_sizes"]["large"] == 1
    assert (tmp_path / "s.png").stat().st_size > 1000
    table = CliRunner().invoke(app, ["data", "stats", str(known_set)])
    assert table.exit_code == 0 and "knife" in table.stdout and "2 / 3" in table.stdout
