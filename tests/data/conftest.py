"""Fixtures of the data-inspection tests: hand-made tiny YOLO sets whose answers are known, and a small copy
of the real OPIXray set with planted faults."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

# A label file: None = no label file (background image), else its lines.
Labels = Sequence[str] | None


def write_image(path: Path, seed: int, size: tuple[int, int] = (64, 48), fmt: str | None = None) -> Path:
    """A small random image (distinct per seed, so no accidental duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_yolo_set(
    root: Path,
    names: Sequence[str],
    splits: Mapping[str, Mapping[str, Labels]],
    threats: Sequence[str] | None = None,
    suffix: str = ".png",
    seed: int = 0,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """Write ``images/<split>/<stem><suffix>`` and ``labels/<split>/<stem>.txt``; return data.yaml."""
    n = seed * 100_000
    for split, files in splits.items():
        for stem, lines in files.items():
            n += 1
            write_image(root / "images" / split / f"{stem}{suffix}", n, size)
            if lines is not None:
                label = root / "labels" / split / f"{stem}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("".join(f"{line}\n" for line in lines))
    body: dict = {s: f"images/{s}" for s in splits}
    body["names"] = dict(enumerate(names))
    if threats:
        body["threats"] = list(threats)
    (root / "data.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return root / "data.yaml"


@pytest.fixture
def yolo_set(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``yolo_set("name", names, splits, threats=None)`` builds a set under tmp_path/name."""

    def build(
        name: str, names: Sequence[str], splits: Mapping[str, Mapping[str, Labels]], **kw: object
    ) -> Path:
        return make_yolo_set(tmp_path / name, names, splits, **kw)  # type: ignore[arg-type]

    return build


@pytest.fixture
def image_writer() -> Callable[..., Path]:
    """``image_writer(path, seed, size=(64, 48))``: a small random image, distinct per seed."""
    return write_image


@pytest.fixture
def file_sha1() -> Callable[[Path], str]:
    return lambda path: hashlib.sha1(path.read_bytes()).hexdigest()


@dataclass
class FaultyCopy:
    """A 20 train + 10 val copy of OPIXray with one planted fault of each kind, and where each one is."""

    yaml: Path
    truncated_image: Path
    class9_label: Path  # line 2
    zero_width_label: Path  # line 1
    coord_13_label: Path  # line 1
    leaked_val_image: Path
    leaked_from: Path


@pytest.fixture
def faulty_opixray(opixray_yaml: Path, tmp_path: Path) -> FaultyCopy:
    root = tmp_path / "faulty"
    src = opixray_yaml.parent
    for split, n in (("train", 20), ("val", 10)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image in sorted((src / "images" / split).iterdir())[:n]:
            shutil.copy2(image, root / "images" / split / image.name)
            shutil.copy2(
                src / "labels" / split / f"{image.stem}.txt", root / "labels" / split / f"{image.stem}.txt"
            )
    shutil.copy2(opixray_yaml, root / "data.yaml")
    train = sorted((root / "images" / "train").iterdir())
    labels = [root / "labels" / "train" / f"{p.stem}.txt" for p in train]

    data = train[0].read_bytes()
    train[0].write_bytes(data[: len(data) // 2])

    first = labels[1].read_text().splitlines()[0]
    labels[1].write_text(f"{first}\n9 {' '.join(first.split()[1:])}\n")

    c, x, y, _, h = labels[2].read_text().split()[:5]
    labels[2].write_text(f"{c} {x} {y} 0 {h}\n")

    c, _, y, w, h = labels[3].read_text().split()[:5]
    labels[3].write_text(f"{c} 1.3 {y} {w} {h}\n")

    leaked = root / "images" / "val" / f"copy_{train[4].name}"
    shutil.copy2(train[4], leaked)
    shutil.copy2(labels[4], root / "labels" / "val" / f"copy_{train[4].stem}.txt")
    return FaultyCopy(root / "data.yaml", train[0], labels[1], labels[2], labels[3], leaked, train[4])
