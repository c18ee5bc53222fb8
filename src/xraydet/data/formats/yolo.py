"""YOLO labels: one ``class cx cy w h`` line per box, normalised to the image size, one .txt per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xraydet.data.dataset import label_path_for, load_dataset, read_label_file
from xraydet.data.formats import AnnotationSet, FormatError, Record
from xraydet.io import atomic_write_text
from xraydet.structures import Detections


def format_lines(dets: Detections, width: int, height: int) -> str:
    """YOLO label text for ``dets`` (empty string for an image without boxes).

    Example:
        >>> format_lines(Detections([[256, 128, 768, 384]], [1]), 1024, 512)
        '1 0.500000 0.500000 0.500000 0.500000\\n'
    """
    return "".join(
        f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in dets.to_yolo(width, height)
    )


def write_label_file(path: Path, dets: Detections, width: int, height: int) -> Path:
    return atomic_write_text(path, format_lines(dets, width, height))


def read_split(data_yaml: Path, split: str) -> AnnotationSet:
    """Read one split of a YOLO data set into records (image sizes from the image headers)."""
    from PIL import Image

    ds = load_dataset(data_yaml)
    records = []
    for image, label in ds.iter_samples(split):
        with Image.open(image) as im:
            w, h = im.size
        rows = read_label_file(label) if label.exists() else np.zeros((0, 5))
        bad = rows[:, 0] >= len(ds.names)
        if bad.any():
            raise FormatError(
                f"class id {int(rows[bad][0, 0])} outside names (0..{len(ds.names) - 1})", label
            )
        dets = Detections.from_yolo(rows, w, h)
        rec = Record.from_detections(dets, ds.names, image.name, w, h, str(label_path_for(image)))
        rec.image_path = image
        records.append(rec)
    return AnnotationSet(records, declared_names=list(ds.names))
