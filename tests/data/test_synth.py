"""Synthetic X-ray generator: determinism, layout, pixel-exact labels, threat-free share, pseudo-colour."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from xraydet.data.dataset import load_dataset, read_label_file
from xraydet.data.synth import (
    NAMES,
    THREATS,
    Part,
    Placed,
    SynthConfig,
    _Canvas,
    _draw_part,
    _rect,
    generate,
    pseudo_colour,
)
from xraydet.structures import xywhn_to_xyxy


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = SynthConfig(n_train=6, n_val=3, imgsz=96, seed=7)
    a, b = _digest(generate(cfg, tmp_path / "a").parent), _digest(generate(cfg, tmp_path / "b").parent)
    assert a == b
    c = _digest(generate(cfg.model_copy(update={"seed": 8}), tmp_path / "c").parent)
    assert set(c) == set(a)
    assert c != a


def test_earlier_images_do_not_depend_on_how_many_are_made(tmp_path: Path) -> None:
    small = generate(SynthConfig(n_train=3, n_val=1, imgsz=96, threat_free_fraction=0), tmp_path / "s").parent
    large = generate(SynthConfig(n_train=6, n_val=1, imgsz=96, threat_free_fraction=0), tmp_path / "l").parent
    for i in range(3):
        name = f"synth_train_{i:05d}"
        assert (small / "images/train" / f"{name}.jpg").read_bytes() == (
            large / "images/train" / f"{name}.jpg"
        ).read_bytes()


def test_layout_and_data_yaml(tmp_path: Path) -> None:
    data_yaml = generate(SynthConfig(n_train=5, n_val=2, imgsz=128), tmp_path / "out")
    assert data_yaml == tmp_path / "out" / "data.yaml"
    raw = yaml.safe_load(data_yaml.read_text())
    assert raw["threats"] == ["knife", "scissors", "gun"]
    ds = load_dataset(data_yaml)
    assert ds.names == list(NAMES)
    assert "bottle" in ds.names and "bottle" not in ds.threats
    assert {ds.names[i] for i in ds.threat_ids} == set(THREATS)
    assert len(ds.images("train")) == 5 and len(ds.images("val")) == 2
    for image, label in ds.iter_samples("train"):
        assert label.exists()  # threat-free bags still get an (empty) label file
        with Image.open(image) as im:
            assert im.size == (128, 128) and im.mode == "RGB"
    assert not list(tmp_path.glob(".out.*"))  # no temp folder left behind


def test_threat_free_fraction_is_exact(tmp_path: Path) -> None:
    cfg = SynthConfig(n_train=40, n_val=8, imgsz=128, threat_free_fraction=0.25, seed=3)
    ds = load_dataset(generate(cfg, tmp_path / "out"))
    for split, n in (("train", 40), ("val", 8)):
        free = 0
        for _, label in ds.iter_samples(split):
            rows = read_label_file(label)
            if not np.isin(rows[:, 0], sorted(ds.threat_ids)).any():
                free += 1
        assert free == round(n * 0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_are_exact_to_the_pixel(tmp_path: Path, seed: int) -> None:
    """One threat on an empty, noise-free belt: the label box must equal the extent of non-white pixels."""
    cfg = SynthConfig(
        n_train=6,
        n_val=0,
        imgsz=160,
        seed=seed,
        clutter=0,
        noise=0,
        bottle_probability=0,
        max_threats=1,
        threat_free_fraction=0,
        image_format="png",
    )
    ds = load_dataset(generate(cfg, tmp_path / "out"))
    checked = 0
    for image, label in ds.iter_samples("train"):
        rgb = np.asarray(Image.open(image).convert("RGB")).astype(int)
        object_pixels = np.abs(rgb - rgb[0, 0]).sum(axis=2) > 0  # the corner is bare belt
        ys, xs = np.nonzero(object_pixels)
        rows = read_label_file(label)
        assert len(rows) == 1
        box = xywhn_to_xyxy(rows[:, 1:], 160, 160)[0]
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose(box, expected, atol=1e-3)  # 6-decimal labels: < 0.001 px
        checked += 1
    assert checked == 6


def test_boxes_sit_on_darker_pixels_in_cluttered_bags(synth_yaml: Path) -> None:
    """X-ray objects absorb: inside a threat box the scan is darker than the image on average."""
    ds = load_dataset(synth_yaml)
    inside, overall = [], []
    for image, label in ds.iter_samples("train"):
        grey = np.asarray(Image.open(image).convert("L"), dtype=float)
        for x1, y1, x2, y2 in xywhn_to_xyxy(read_label_file(label)[:, 1:], *grey.shape[::-1]).astype(int):
            inside.append(grey[y1:y2, x1:x2].mean())
            overall.append(grey.mean())
    assert len(inside) > 20
    assert np.mean(inside) < np.mean(overall) - 10


def test_pseudo_colour_follows_material_and_thickness() -> None:
    att_high = np.array([[0.0, 0.3, 0.3, 1.5, 3.0]])
    ratio = np.array([[1.25, 1.25, 2.6, 2.6, 2.6]])
    rgb = pseudo_colour(att_high * ratio, att_high).astype(int)[0]
    assert (rgb[0] > 240).all()  # nothing in the beam: bright belt
    assert rgb[1, 0] > rgb[1, 2]  # organic: orange (red over blue)
    assert rgb[2, 2] > rgb[2, 0]  # metal: blue
    assert rgb[4].sum() < rgb[3].sum() < rgb[2].sum()  # thicker metal: darker


def test_beer_lambert_overlap_multiplies_transmission() -> None:
    """Two overlapping objects rendered by the real renderer: where they overlap, the transmission
    ``exp(-attenuation)`` at each energy is the product of the two objects' transmissions alone."""
    steel = Placed([Part(_rect(0.0, 0.0, 1.0, 0.5), "metal", 0.3)], (20.0, 20.0), 30.0, 0.0)
    shirt = Placed([Part(_rect(0.0, 0.0, 1.0, 0.5), "organic", 0.8)], (35.0, 28.0), 30.0, 0.0)

    def render(*objects: Placed) -> _Canvas:
        canvas = _Canvas(80)
        for obj in objects:
            _draw_part(canvas, obj, obj.parts[0], np.random.default_rng(0))
        return canvas

    alone_a, alone_b, both = render(steel), render(shirt), render(steel, shirt)
    overlap = (alone_a.att_high > 0) & (alone_b.att_high > 0)
    assert overlap.sum() > 50 and (alone_a.att_high > 0).sum() > overlap.sum()
    for energy in ("att_low", "att_high"):
        t_a, t_b = np.exp(-getattr(alone_a, energy)), np.exp(-getattr(alone_b, energy))
        np.testing.assert_allclose(np.exp(-getattr(both, energy)), t_a * t_b, rtol=1e-12)
        assert (np.exp(-getattr(both, energy))[overlap] < np.minimum(t_a, t_b)[overlap]).all()
    # the scan is darker where the objects overlap than where either lies alone
    grey = pseudo_colour(both.att_low, both.att_high).astype(float).mean(axis=2)
    only_a = (alone_a.att_high > 0) & ~overlap
    assert grey[overlap].mean() < grey[only_a].mean()


def test_interrupted_generation_leaves_nothing(tmp_path: Path) -> None:
    calls = []

    def boom(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(SynthConfig(n_train=5, n_val=1, imgsz=96), tmp_path / "out", progress=boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("imgsz", 10), ("threat_free_fraction", 1.5), ("n_train", -1), ("image_format", "gif"), ("colour", 1)],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SynthConfig(**{field: value})


def test_cli_synth(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app
    from xraydet.errors import XrayDetError

    out = tmp_path / "cli"
    args = ["data", "synth", "-o", str(out), "--n-train", "4", "--n-val", "2", "--imgsz", "96", "--seed", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "knife" in result.output and (out / "data.yaml").is_file()
    assert len(list((out / "images" / "train").iterdir())) == 4
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, XrayDetError) and "already exists" in str(again.exception)
    bad = CliRunner().invoke(app, ["data", "synth", "-o", str(tmp_path / "x"), "--imgsz", "8"])
    assert isinstance(bad.exception, XrayDetError) and "imgsz" in str(bad.exception)
