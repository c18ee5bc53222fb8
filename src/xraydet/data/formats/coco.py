"""COCO detection json (``images``, ``annotations``, ``categories``), including Roboflow exports.

COCO boxes are ``[x, y, width, height]`` in pixels from the top-left corner. Category ids are arbitrary
integers; xraydet keeps the categories in ascending id order and prints how each id maps to a YOLO class.

Roboflow's COCO export adds a category 0 that is the *super-category* of all the others and has no
annotations (e.g. ``{"id": 0, "name": "threats", "supercategory": "none"}`` with every real class
``"supercategory": "threats"``). Taken literally it would become YOLO class 0 and push every real class up
by one. The reader drops such a category (no annotations and named as another category's supercategory) and
reports it, instead of shifting ids silently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from xraydet.data.dataset import DatasetError, read_text_file
from xraydet.data.formats import AnnotationSet, FormatError, Record
from xraydet.io import atomic_write_json


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text_file(path, "utf-8-sig"))  # a UTF-8 BOM (Windows tools) is dropped
    except DatasetError as err:
        raise FormatError(err.message, path, err.line) from err
    except json.JSONDecodeError as err:
        raise FormatError(f"not valid JSON: {err.msg}", path, err.lineno) from err
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise FormatError("expected a COCO object with 'images', 'annotations' and 'categories'", path)
    for key in ("images", "annotations", "categories"):
        _check_objects(data[key], key, path)
    return data


def _check_objects(items: Any, key: str, path: Path) -> None:
    """Refuse a COCO section that is not a list of objects, naming the section or the first bad entry."""
    if not isinstance(items, list):
        raise FormatError(f"'{key}' should be a list, got {type(items).__name__}", path)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise FormatError(f"{key}[{i}] should be an object, got {item!r:.80}", path)


def _field(item: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path, where: str) -> Any:
    if key not in item:
        raise FormatError(f"{where}: missing '{key}'", path)
    value = item[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(
            f"{where}: '{key}' should be {getattr(kind, '__name__', kind)}, got {value!r}", path
        )
    return value


def _crowd(ann: dict[str, Any], path: Path, where: str) -> bool:
    """COCO's ``iscrowd`` flag (0 or 1, absent or null meaning 0); any other value raises naming it."""
    value = ann.get("iscrowd") or 0  # absent or null: not a crowd
    if value not in (0, 1):
        raise FormatError(f"{where}: 'iscrowd' should be 0 or 1, got {value!r}", path)
    return bool(value)


def supercategories_to_drop(categories: list[dict[str, Any]], used: set[int]) -> list[dict[str, Any]]:
    """Categories that only group others (Roboflow's category 0): unused and named as a supercategory."""
    parents = {c.get("supercategory") for c in categories if c.get("supercategory") not in (None, "", "none")}
    return [c for c in categories if c["id"] not in used and c["name"] in parents]


def read(path: Path) -> AnnotationSet:
    """Read a COCO json into records; boxes outside the image are clipped (noted), degenerate ones raise."""
    path = Path(path)
    data = _load(path)
    categories = []
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        categories.append(
            {
                "id": _field(cat, "id", int, path, where),
                "name": str(_field(cat, "name", str, path, where)),
                "supercategory": cat.get("supercategory"),
            }
        )
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise FormatError(f"duplicate category ids in categories: {sorted(ids)}", path)
    used = {a.get("category_id") for a in data["annotations"]}
    dropped = supercategories_to_drop(categories, used)
    notes = [
        f"dropped COCO category {c['id']} '{c['name']}': a super-category of the others with no annotations "
        "(Roboflow export)"
        for c in dropped
    ]
    kept = sorted((c for c in categories if c not in dropped), key=lambda c: c["id"])
    names = [c["name"] for c in kept]
    if len(set(names)) != len(names):
        raise FormatError(f"two categories share a name: {names}", path)
    cat_name = {c["id"]: c["name"] for c in kept}

    images: dict[int, dict[str, Any]] = {}
    first_index: dict[int, int] = {}
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        image_id = _field(img, "id", int, path, where)
        if image_id in first_index:
            raise FormatError(
                f"images[{first_index[image_id]}] and {where} share id {image_id}: their annotations "
                "cannot be told apart",
                path,
            )
        first_index[image_id] = i
        images[image_id] = {
            "file_name": _field(img, "file_name", str, path, where),
            "width": _field(img, "width", int, path, where),
            "height": _field(img, "height", int, path, where),
            "where": f"{path}: {where} (id={image_id})",
            "boxes": [],
            "labels": [],
            "notes": [],
        }
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id={ann.get('id')})"
        image_id = _field(ann, "image_id", int, path, where)
        if image_id not in images:
            raise FormatError(f"{where}: image_id {image_id} is not in 'images'", path)
        category = _field(ann, "category_id", int, path, where)
        if category not in cat_name:
            known = ", ".join(f"{k}={v}" for k, v in cat_name.items())
            raise FormatError(f"{where}: category_id {category} is not a category ({known})", path)
        bbox = _field(ann, "bbox", list, path, where)
        if len(bbox) != 4 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox
        ):
            raise FormatError(
                f"{where}: bbox should be [x, y, width, height] of finite numbers, got {bbox!r}", path
            )
        if _crowd(ann, path, where):
            images[image_id]["notes"].append(f"{where}: crowd annotation skipped")
            continue
        x, y, w, h = (float(v) for v in bbox)
        img = images[image_id]
        box = np.clip([x, y, x + w, y + h], 0, [img["width"], img["height"]] * 2)
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            raise FormatError(f"{where}: empty box {bbox} in a {img['width']}x{img['height']} image", path)
        if not np.allclose(box, [x, y, x + w, y + h]):
            img["notes"].append(f"{where}: box {bbox} clipped to the image")
        img["boxes"].append(box)
        img["labels"].append(cat_name[category])
    records = [
        Record(
            v["file_name"],
            v["width"],
            v["height"],
            np.array(v["boxes"]).reshape(-1, 4),
            v["labels"],
            v["where"],
            notes=v["notes"],
        )
        for _, v in sorted(images.items())
    ]
    return AnnotationSet(
        records, declared_names=names, source_ids={c["name"]: c["id"] for c in kept}, notes=notes
    )


def write(path: Path, records: list[Record], names: list[str], first_category_id: int = 1) -> Path:
    """Write records as COCO json; categories get ids ``first_category_id + class index``."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, rec in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": rec.file_name, "width": rec.width, "height": rec.height})
        for box, label in zip(rec.boxes, rec.labels, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": names.index(label) + first_category_id,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": i + first_category_id, "name": n, "supercategory": "none"} for i, n in enumerate(names)
    ]
    return atomic_write_json(path, {"images": images, "annotations": annotations, "categories": categories})
