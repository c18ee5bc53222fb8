"""Pascal VOC xml: one file per image with ``<size>`` and ``<object><name><bndbox>`` entries.

VOC corners are 1-based pixel indices, both inclusive (the devkit's convention): ``xmin=1, xmax=10`` covers
the first ten pixel columns. In xraydet's continuous pixel coordinates that is ``x1 = xmin - 1, x2 = xmax``
(as detectron2's VOC loader does), so a box written by :func:`write` reads back identical.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from xraydet.data.formats import AnnotationSet, FormatError, Record, clip_to_image
from xraydet.io import atomic_write_text


def _text(node: ET.Element, tag: str, path: Path, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise FormatError(f"{where}: missing <{tag}>", path)
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path, where: str) -> float:
    value = _text(node, tag, path, where)
    try:
        number = float(value)
    except ValueError as err:
        raise FormatError(f"{where}: <{tag}> is not a number: {value!r}", path) from err
    if not math.isfinite(number):
        raise FormatError(f"{where}: <{tag}> is not a finite number: {value!r}", path)
    return number


def read(path: Path) -> AnnotationSet:
    """Read one VOC xml file (one image)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise FormatError(f"not valid XML: {err}", path, err.position[0]) from err
    if root.tag != "annotation":
        raise FormatError(f"expected an <annotation> root, got <{root.tag}>", path)
    file_name = _text(root, "filename", path, "<annotation>")
    size = root.find("size")
    width = height = None
    if size is not None:
        width, height = (
            int(_number(size, "width", path, "<size>")),
            int(_number(size, "height", path, "<size>")),
        )
        if width <= 0 or height <= 0:  # some tools write 0 when they did not know; read it from the image
            width = height = None
    boxes, labels, notes = [], [], []
    for i, obj in enumerate(root.findall("object")):
        where = f"<object> #{i + 1}"
        name = _text(obj, "name", path, where)
        bnd = obj.find("bndbox")
        if bnd is None:
            raise FormatError(f"{where} '{name}': missing <bndbox>", path)
        xmin, ymin, xmax, ymax = (
            _number(bnd, t, path, f"{where} '{name}'") for t in ("xmin", "ymin", "xmax", "ymax")
        )
        box = np.array([xmin - 1, ymin - 1, xmax, ymax])
        if box[2] <= box[0] or box[3] <= box[1]:
            raise FormatError(
                f"{where} '{name}': empty box xmin={xmin} ymin={ymin} xmax={xmax} ymax={ymax}", path
            )
        if width is not None and height is not None:
            clipped, changed = clip_to_image(box, width, height, f"{path}: {where} '{name}'")
            if changed:
                notes.append(f"{path}: {where} '{name}' clipped to the {width}x{height} image")
                box = clipped[0]
        boxes.append(box)
        labels.append(name)
    record = Record(file_name, width, height, np.array(boxes).reshape(-1, 4), labels, str(path), notes=notes)
    return AnnotationSet([record])


def to_xml(record: Record) -> str:
    """VOC xml text for one record (corners rounded to whole pixels, 1-based inclusive)."""
    objects = []
    for box, label in zip(record.boxes, record.labels, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        objects.append(
            f"  <object>\n    <name>{_escape(label)}</name>\n    <difficult>0</difficult>\n    <bndbox>\n"
            f"      <xmin>{x1 + 1}</xmin>\n      <ymin>{y1 + 1}</ymin>\n      <xmax>{x2}</xmax>\n"
            f"      <ymax>{y2}</ymax>\n    </bndbox>\n  </object>\n"
        )
    return (
        f"<annotation>\n  <filename>{_escape(record.file_name)}</filename>\n  <size>\n"
        f"    <width>{record.width}</width>\n    <height>{record.height}</height>\n    <depth>3</depth>\n"
        f"  </size>\n{''.join(objects)}</annotation>\n"
    )


def write(path: Path, record: Record) -> Path:
    return atomic_write_text(path, to_xml(record))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
