"""Copy part of a YOLO data set (images and labels of train and val) to a folder of its own.

Benchmarks train on such copies, never on the shared data set: Ultralytics writes ``labels/*.cache`` beside
the labels it reads. Needs only PyYAML, so the GPU machine's scripts import it too.

Example:
    copy_subset(Path("../shared/data/opixray/data.yaml"), Path("/tmp/d"), train=slice(0, 1980, 6))
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def copy_subset(src_yaml: Path, dest: Path, train: slice = slice(None), val: slice = slice(None)) -> Path:
    """Copy the ``train`` and ``val`` slices of the sorted images of ``src_yaml``'s splits (with their labels)
    to ``dest/images/<split>`` and ``dest/labels/<split>``; return the new ``dest/data.yaml``."""
    spec = yaml.safe_load(src_yaml.read_text())
    for split, part in (("train", train), ("val", val)):
        img_dir = src_yaml.parent / spec[split]
        lbl_dir = src_yaml.parent / str(spec[split]).replace("images", "labels", 1)
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[part]
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy2(image, dest / "images" / split / image.name)
            label = lbl_dir / f"{image.stem}.txt"
            if label.exists():
                shutil.copy2(label, dest / "labels" / split / label.name)
    out = {"path": str(dest), "train": "images/train", "val": "images/val", "names": spec["names"]}
    (dest / "data.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    return dest / "data.yaml"
