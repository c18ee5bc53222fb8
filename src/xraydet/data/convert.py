"""Convert COCO, Pascal VOC and loc-token JSONL annotations to a YOLO data set.

The class order is decided in one place (:func:`resolve_classes`), written explicitly into ``data.yaml`` and
``conversion.json``, and returned for printing: ``--classes`` fixes it; otherwise COCO keeps its categories in
id order and the name-only formats sort names alphabetically. A label that is not in the class list is an
error naming the file and line/record, never a silent re-index.

Example:
    >>> result = convert(Path("export/"), "coco", Path("yolo/"))  # doctest: +SKIP
    >>> result.names  # doctest: +SKIP
    ['knife', 'gun']
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from xraydet.data.dataset import SPLIT_NAMES, write_data_yaml
from xraydet.data.formats import AnnotationSet, FormatError, Record, coco, loctoken, voc
from xraydet.data.formats.yolo import format_lines
from xraydet.io import atomic_directory, atomic_write_json, refuse_output_over_inputs
from xraydet.ultralytics_env import pil_open

log = logging.getLogger(__name__)

SOURCE_FORMATS = ("coco", "voc", "loctoken")
_SUFFIX = {"coco": ".json", "voc": ".xml", "loctoken": ".jsonl"}
_SPLIT_WORD = re.compile(r"(?:^|[^a-z])(train|training|valid|validation|val|test)(?:[^a-z]|$)")
_SPLIT_ALIAS = {"training": "train", "valid": "val", "validation": "val"}


class SplitSummary(BaseModel):
    images: int
    boxes: int
    sources: list[str]


class ConvertResult(BaseModel):
    """What a conversion wrote: the class order, how source classes were mapped, counts and notes."""

    out: Path
    data_yaml: Path
    source_format: str
    names: list[str]
    mapping: list[str]
    splits: dict[str, SplitSummary]
    notes: list[str]


def infer_split(path: Path, root: Path, default: str) -> str:
    """The split a file belongs to, from the words in its path below ``root`` (``valid`` -> ``val``)."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)
    for part in reversed(parts):
        match = _SPLIT_WORD.search(part.lower())
        if match:
            return _SPLIT_ALIAS.get(match.group(1), match.group(1))
    return default


def discover(src: Path, fmt: str, split: str | None = None) -> dict[str, list[Path]]:
    """Annotation files of ``src`` grouped by split (a file, or a folder searched recursively).

    Below a folder the split comes from each file's path inside it; for a single file, from its name and its
    folder's name (``valid/_annotations.coco.json`` is val), not from folders further up.
    """
    if fmt not in SOURCE_FORMATS:
        raise FormatError(f"unknown format '{fmt}' (choose from {', '.join(SOURCE_FORMATS)})")
    if split is not None and split not in SPLIT_NAMES:
        raise FormatError(
            f"split '{split}' is not one of {', '.join(SPLIT_NAMES)} (the only splits a data.yaml declares)"
        )
    src = Path(src)
    if not src.exists():
        raise FormatError("no such file or folder", src)
    files = [src] if src.is_file() else sorted(p for p in src.rglob(f"*{_SUFFIX[fmt]}") if p.is_file())
    if not files:
        raise FormatError(f"no {_SUFFIX[fmt]} annotation files found for format '{fmt}'", src)
    groups: dict[str, list[Path]] = {}
    for f in files:
        name = split or infer_split(f, src if src.is_dir() else src.parent.parent, "train")
        groups.setdefault(name, []).append(f)
    return groups


def read_file(path: Path, fmt: str, bins: int = loctoken.DEFAULT_BINS) -> AnnotationSet:
    if fmt == "coco":
        return coco.read(path)
    if fmt == "voc":
        return voc.read(path)
    return loctoken.read(path, bins)


def resolve_classes(
    sets: list[tuple[Path, AnnotationSet]], classes: list[str] | None
) -> tuple[list[str], list[str]]:
    """Decide the YOLO class order and describe the mapping; unknown labels raise naming their record."""
    declared = {tuple(s.declared_names) for _, s in sets if s.declared_names is not None}
    if len(declared) > 1:
        listing = "; ".join(f"{p}: {s.declared_names}" for p, s in sets)
        raise FormatError(f"annotation files declare different class lists ({listing}); pass --classes")
    if classes is not None:
        names = [c.strip() for c in classes if c.strip()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FormatError(f"--classes lists {dupes} more than once")
    elif declared:
        names = list(next(iter(declared)))
    else:
        names = sorted({label for _, s in sets for r in s.records for label in r.labels})
    known = set(names)
    for _, s in sets:
        for rec in s.records:
            for label in rec.labels:
                if label not in known:
                    hint = [n for n in names if n.lower() == label.lower()]
                    extra = f" (did you mean '{hint[0]}'? names are case-sensitive)" if hint else ""
                    raise FormatError(f"{rec.where}: class '{label}' is not in the class list {names}{extra}")
    source_ids: dict[str, int] = {}
    for _, s in sets:
        source_ids.update(s.source_ids or {})
    mapping = [
        (f"COCO category {source_ids[n]} '{n}' -> class {i}" if n in source_ids else f"'{n}' -> class {i}")
        for i, n in enumerate(names)
    ]
    return names, mapping


def _find_image(rec: Record, annotation: Path, images: Path | None) -> Path:
    ref = Path(rec.file_name)
    if ref.is_absolute() and ref.is_file():
        return ref
    bases = [images] if images is not None else []
    bases += [annotation.parent, annotation.parent.parent / "JPEGImages", annotation.parent.parent / "images"]
    for base in bases:
        for candidate in (base / ref, base / ref.name):
            if candidate.is_file():
                return candidate
    searched = ", ".join(str(b) for b in bases)
    raise FormatError(
        f"{rec.where}: image '{rec.file_name}' not found (looked in {searched}; pass --images DIR)"
    )


def _dest_name(rec: Record, annotation: Path, taken: dict[str, str]) -> str:
    """The record's image file name in its output split, claimed in ``taken`` (stem -> record).

    Labels go by stem, so two images of one split may not share one. An embedded (``data:`` URL) image is
    named by its line (``image_000001.png``), which another annotation file of the split may use too: such a
    name gets the annotation file's stem as a prefix. Two real files with one stem are an error.
    """
    name = Path(rec.file_name).name
    if Path(name).stem in taken and rec.image_bytes is not None:
        name = f"{annotation.stem}__{name}"
    stem = Path(name).stem
    if stem in taken:
        raise FormatError(
            f"{rec.where}: image name '{name}' clashes with {taken[stem]} (same file stem in one split)"
        )
    taken[stem] = rec.where
    return name


def _image_size(rec: Record, path: Path | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """The image's stored size and its upright size (sides swapped by an EXIF orientation of 5 to 8)."""
    import io

    from PIL import Image

    try:
        with pil_open(io.BytesIO(rec.image_bytes) if rec.image_bytes is not None else path) as im:  # type: ignore[arg-type]
            width, height = im.size
            orientation = im.getexif().get(0x0112)
    except (OSError, Image.DecompressionBombError) as err:  # the bomb check: PIL's pixel limit, at open
        raise FormatError(f"{rec.where}: cannot open image '{rec.file_name}': {err}") from err
    return (width, height), ((height, width) if orientation in (5, 6, 7, 8) else (width, height))


def annotated_size(rec: Record, stored: tuple[int, int], upright: tuple[int, int]) -> tuple[int, int]:
    """The image size the record's boxes refer to: the stored one, unless the annotations state the upright
    size of an EXIF-rotated image (drawn on it as viewers show it, and as Ultralytics/OpenCV load it).

    A stated size that is neither raises (the boxes belong to another resolution).

    Example:
        >>> rec = Record("a.jpg", 48, 64, [[4, 8, 24, 48]], ["knife"], "c.json: images[0]")
        >>> annotated_size(rec, (64, 48), (48, 64))
        (48, 64)
    """
    if rec.width is None or (rec.width, rec.height) == stored:
        if stored != upright:  # the boxes may have been drawn upright; nothing here says which
            rec.notes.append(
                f"{rec.where}: '{rec.file_name}' has an EXIF rotation (stored {stored[0]}x{stored[1]}, shown "
                f"{upright[0]}x{upright[1]}, as Ultralytics loads it); boxes read on the stored image: check "
                "them with `xraydet data doctor`"
            )
        return stored
    if (rec.width, rec.height) == upright:
        rec.notes.append(
            f"{rec.where}: '{rec.file_name}' is stored {stored[0]}x{stored[1]} with an EXIF rotation; "
            f"boxes read on the upright {upright[0]}x{upright[1]} image, as Ultralytics loads it"
        )
        return upright
    raise FormatError(
        f"{rec.where}: annotations are for a {rec.width}x{rec.height} image but '{rec.file_name}' is "
        f"{stored[0]}x{stored[1]}"
    )


def convert(
    src: Path,
    fmt: str,
    out: Path,
    *,
    classes: list[str] | None = None,
    images: Path | None = None,
    bins: int = loctoken.DEFAULT_BINS,
    split: str | None = None,
    threats: list[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ConvertResult:
    """Convert annotations in ``fmt`` under ``src`` into a YOLO data set at ``out`` (atomically).

    Args:
        src: An annotation file or a folder of them (split inferred from path words: train/valid/val/test).
        fmt: ``coco``, ``voc`` or ``loctoken``.
        out: Output folder (``images/<split>``, ``labels/<split>``, ``data.yaml``, ``conversion.json``).
        classes: Explicit class order; labels outside it raise.
        images: Folder holding the images when they are not beside the annotations.
        bins: Loc-token bins per image side (1024 for PaliGemma).
        split: Put everything into this split (train, val or test) instead of inferring it.
        threats: Class names to list as ``threats:`` in data.yaml.
        progress: Called with ``(done, total)`` images.
    """
    refuse_output_over_inputs(out, [src] if images is None else [src, images])
    groups = discover(Path(src), fmt, split)
    sets = [(f, read_file(f, fmt, bins)) for files in groups.values() for f in files]
    names, mapping = resolve_classes(sets, classes)
    missing_threats = [t for t in threats or [] if t not in names]
    if missing_threats:
        raise FormatError(f"--threats names {missing_threats}, which are not classes ({names})")
    notes = [n for _, s in sets for n in s.notes]
    total = sum(len(s.records) for _, s in sets)
    done = 0
    summaries: dict[str, SplitSummary] = {}
    read_from: set[Path] = set()  # folders images were found in (beside, above or named by the annotations)
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        for split_name, files in groups.items():
            (tmp / "images" / split_name).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split_name).mkdir(parents=True, exist_ok=True)
            taken: dict[str, str] = {}
            n_images = n_boxes = 0
            for f, s in sets:
                if f not in files:
                    continue
                for rec in s.records:
                    path = None if rec.image_bytes is not None else _find_image(rec, f, images)
                    if path is not None:
                        read_from.add(path.parent)
                    width, height = annotated_size(rec, *_image_size(rec, path))
                    rec.set_size(width, height)
                    notes.extend(rec.notes)
                    dest_name = _dest_name(rec, f, taken)
                    dest = tmp / "images" / split_name / dest_name
                    if rec.image_bytes is not None:
                        dest.write_bytes(rec.image_bytes)
                    else:
                        shutil.copyfile(path, dest)  # type: ignore[arg-type]
                    label_text = format_lines(rec.detections(names), width, height)
                    (tmp / "labels" / split_name / f"{Path(dest_name).stem}.txt").write_text(
                        label_text, encoding="utf-8"
                    )
                    n_images += 1
                    n_boxes += len(rec.boxes)
                    done += 1
                    if progress is not None:
                        progress(done, total)
            summaries[split_name] = SplitSummary(
                images=n_images, boxes=n_boxes, sources=[str(f) for f in files]
            )
        refuse_output_over_inputs(out, sorted(read_from))  # before OUT is replaced, when the block ends
        write_data_yaml(tmp, names, {s: f"images/{s}" for s in groups}, threats)
        result = ConvertResult(
            out=Path(out),
            data_yaml=Path(out) / "data.yaml",
            source_format=fmt,
            names=names,
            mapping=mapping,
            splits=summaries,
            notes=notes,
        )
        atomic_write_json(tmp / "conversion.json", result.model_dump(mode="json"))
    for line in mapping:
        log.debug("class mapping: %s", line)
    return result
