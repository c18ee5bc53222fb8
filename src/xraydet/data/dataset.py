"""A YOLO-format data set on disk: its ``data.yaml``, splits, images and labels.

Paths in a ``data.yaml`` resolve relative to the yaml file itself (or to its ``path:`` key when that is
absolute or relative to the yaml). Ultralytics resolves a *relative* ``path:`` against its own datasets folder
instead, which silently points training at the wrong place; :func:`write_data_yaml` therefore never writes a
relative ``path:`` key, only yaml-relative split folders, which both tools read the same way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from xraydet.config import validation_problems
from xraydet.errors import XrayDetError
from xraydet.io import TextDecodeError, atomic_write_yaml, decode_text
from xraydet.structures import Detections

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_NAMES = ("train", "val", "test")


class DatasetError(XrayDetError, ValueError):
    """A data set that cannot be read, with the file (and line) at fault."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        self.message = message  # without the ``path:line:`` prefix
        where = "" if path is None else f"{path}{'' if line is None else f':{line}'}: "
        super().__init__(f"{where}{message}")


class DataYaml(BaseModel):
    """The fields of an Ultralytics ``data.yaml`` that xraydet reads (others are kept, not interpreted)."""

    model_config = ConfigDict(extra="allow")

    path: str | None = None
    train: str | list[str] | None = None
    val: str | list[str] | None = None
    test: str | list[str] | None = None
    names: list[str] | dict[int, str]
    nc: int | None = None
    threats: list[str] | None = None

    @field_validator("names")
    @classmethod
    def _names_contiguous(cls, v: list[str] | dict[int, str]) -> list[str] | dict[int, str]:
        if isinstance(v, dict) and sorted(v) != list(range(len(v))):
            raise ValueError(f"class ids must be 0..{len(v) - 1} without gaps, got {sorted(v)}")
        return v

    def name_list(self) -> list[str]:
        return (
            list(self.names)
            if isinstance(self.names, list)
            else [self.names[i] for i in range(len(self.names))]
        )


@dataclass(frozen=True)
class DatasetListing:
    """A data set's images, listed once: each split's images (sorted, as :meth:`Dataset.images` gives them)
    and every path the set is read from (as :meth:`Dataset.locations` gives them).

    ``split`` and ``merge`` pass ``locations`` to :func:`xraydet.io.refuse_output_over_inputs` and work on
    ``images``, so each input folder is walked once per command.

    Example:
        >>> listing = DatasetListing({"val": [Path("/d/images/val/a.png")]}, [Path("/d")])
        >>> listing.images["val"][0].name, listing.locations == [Path("/d")]
        ('a.png', True)
    """

    images: dict[str, list[Path]]  # split name -> its images, sorted
    locations: list[Path]  # root, data.yaml, split sources, then the folders of the images


@dataclass
class Dataset:
    """A data set: class names, threat classes and the image sources of each split.

    Example:
        >>> ds = load_dataset("../shared/data/opixray/data.yaml")  # doctest: +SKIP
        >>> ds.names[:2], len(ds.images("val"))  # doctest: +SKIP
        (['Scissor', 'Folding_Knife'], 350)
    """

    root: Path
    names: list[str]
    splits: dict[str, list[Path]]
    threats: list[str] = field(default_factory=list)
    yaml_path: Path | None = None

    @property
    def threat_ids(self) -> set[int]:
        lowered = {t.lower() for t in self.threats}
        return {i for i, n in enumerate(self.names) if n.lower() in lowered}

    def images(self, split: str) -> list[Path]:
        """All images of ``split``, sorted; an unknown split raises with the valid names."""
        if split not in self.splits:
            raise DatasetError(
                f"no split '{split}' (has: {', '.join(self.splits) or 'none'})", self.yaml_path
            )
        found: list[Path] = []
        for source in self.splits[split]:
            found.extend(_images_in(source))
        return sorted(found)

    def listing(self) -> DatasetListing:
        """Every split's images and the set's :meth:`locations`, from one listing of each split source (a
        folder two splits name is walked once). A command that checks its output against the set's
        locations and then reads its images lists the set once with this, not twice.

        Example:
            >>> ds = load_dataset("../shared/data/opixray/data.yaml")  # doctest: +SKIP
            >>> listing = ds.listing()  # doctest: +SKIP
            >>> listing.images["val"] == ds.images("val")  # doctest: +SKIP
            True
            >>> listing.locations == ds.locations()  # doctest: +SKIP
            True
        """
        listed: dict[Path, list[Path]] = {}
        for sources in self.splits.values():
            for source in sources:
                if source not in listed:
                    listed[source] = _images_in(source)
        images = {split: sorted(p for s in found for p in listed[s]) for split, found in self.splits.items()}
        return DatasetListing(images, self._locations(images))

    def locations(self) -> list[Path]:
        """Every path the data set is read from: its root, data.yaml, each split's sources (folders or
        image-list files) and the folders of its images (an image list may name images anywhere).

        It lists the images to find their folders; to use the images as well, call :meth:`listing` once.
        """
        return self.listing().locations

    def _locations(self, images: Mapping[str, Sequence[Path]]) -> list[Path]:
        """:meth:`locations`, given every split's images."""
        sources = [source for sources in self.splits.values() for source in sources]
        folders = sorted({image.parent for found in images.values() for image in found})
        return [self.root, *([self.yaml_path] if self.yaml_path else []), *sources, *folders]

    def dangling_images(self, split: str) -> list[Path]:
        """Image-named symlinks of ``split``'s folders whose target is missing, sorted.

        :meth:`images` leaves them out (they cannot be read), but Ultralytics' glob lists them and then drops
        them as corrupt, so ``data check`` reports them.
        """
        found = [p for source in self.splits.get(split, []) if source.is_dir() for p in _dangling_in(source)]
        return sorted(found)

    def iter_samples(self, split: str) -> Iterator[tuple[Path, Path]]:
        """``(image, label_file)`` pairs of ``split``; the label file may not exist (a background image)."""
        for image in self.images(split):
            yield image, label_path_for(image)

    def labels(self, image: Path, width: int, height: int) -> Detections:
        """Ground truth of one image in pixel coordinates (empty if it has no label file)."""
        label = label_path_for(image)
        if not label.exists():
            return Detections.empty()
        return Detections.from_yolo(read_label_file(label), width, height)


def duplicate_names(names: Sequence[str]) -> list[str]:
    """Class names given to more than one id, as ``'name' (ids i, j)``: matching classes by name is ambiguous.

    Ultralytics trains such a set, so loading it is allowed; ``data check`` reports it and merge refuses it.

    Example:
        >>> duplicate_names(["knife", "gun", "knife"])
        ["'knife' (ids 0, 2)"]
    """
    ids: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        ids.setdefault(name, []).append(i)
    return [f"'{name}' (ids {', '.join(map(str, found))})" for name, found in ids.items() if len(found) > 1]


def label_path_for(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def parse_label_line(text: str, path: Path | str, line: int) -> np.ndarray:
    """Parse one YOLO label line ``class cx cy w h`` (segments are reduced to their bounding box)."""
    fields = text.split()
    if len(fields) < 5 or (len(fields) > 5 and len(fields) % 2 == 0):
        raise DatasetError(
            f"expected 'class cx cy w h', got {len(fields)} fields: {text.strip()!r}", path, line
        )
    try:
        values = [float(f) for f in fields]
    except ValueError as err:
        raise DatasetError(f"not a number in {text.strip()!r}", path, line) from err
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(f"non-finite number (nan or inf) in {text.strip()!r}", path, line)
    cls = values[0]
    if cls != int(cls) or cls < 0:
        raise DatasetError(f"class id must be a non-negative integer, got {fields[0]!r}", path, line)
    if len(values) == 5:
        return np.array(values)
    xs, ys = np.array(values[1::2]), np.array(values[2::2])
    x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
    return np.array([cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """A text file's contents; bytes that are not ``encoding`` raise :class:`DatasetError` naming the line."""
    try:
        return decode_text(Path(path).read_bytes(), path, encoding)
    except TextDecodeError as err:
        raise DatasetError(err.detail, path, err.line) from err


def read_label_file(path: Path, nc: int | None = None) -> np.ndarray:
    """All rows of a YOLO label file as an ``(N, 5)`` array; a malformed line raises naming file and line, and
    so, given the number of class names ``nc``, does a class id that is not an index into them."""
    rows = []
    for number, text in enumerate(read_text_file(path, "utf-8-sig").splitlines(), start=1):
        if not text.strip():
            continue
        row = parse_label_line(text, path, number)
        if nc is not None and int(row[0]) >= nc:
            hint = "fix the label or data.yaml's names (see `xraydet data check`)"
            raise DatasetError(f"{class_out_of_range(int(row[0]), nc)}; {hint}", path, number)
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, 5))


def class_out_of_range(cls: int, nc: int) -> str:
    """The message for a class id that is not an index into ``names`` (``data check`` and ``split`` share it).

    Example:
        >>> class_out_of_range(9, 5), class_out_of_range(0, 0)
        ('class id 9 but names has 5 classes (0..4)', 'class id 0 but names has no classes')
    """
    return f"class id {cls} but names has " + (f"{nc} classes (0..{nc - 1})" if nc else "no classes")


def _hidden(path: Path, root: Path) -> bool:
    """True if a component of ``path`` below ``root`` starts with '.' (Ultralytics' glob skips those)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _dangling_in(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p, folder) and p.is_symlink() and not p.exists()
    ]


def _images_in(source: Path) -> list[Path]:
    if source.is_dir():
        return [
            p
            for p in source.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p, source) and p.is_file()
        ]
    if source.suffix == ".txt" and source.is_file():
        base = source.parent
        lines = [ln.strip() for ln in read_text_file(source).splitlines() if ln.strip()]
        return [(base / ln).resolve() if not Path(ln).is_absolute() else Path(ln) for ln in lines]
    if source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        return [source]
    raise DatasetError("split source does not exist (expected a folder of images or a .txt list)", source)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(read_text_file(path))
    except yaml.YAMLError as err:
        raise DatasetError(f"not valid YAML: {err}", path) from err
    if not isinstance(data, dict):
        raise DatasetError("expected a mapping with 'names' and split keys", path)
    return data


def _data_yaml_in(folder: Path) -> Path | None:
    """The data set's YAML file in ``folder`` (``data.yaml``, ``dataset.yaml`` or ``data.yml``), if any.

    One of those names that is there but is not a file (a folder, a broken link) is an error naming it: the
    folder would otherwise be read as a bare image folder, and its real trouble reported as "no images".
    """
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        path = folder / name
        if path.is_file():
            return path
        if path.is_dir():
            raise DatasetError("is a folder, not a YAML file of the data set's class names and splits", path)
        if path.is_symlink():
            raise DatasetError(f"is a link to {path.readlink()}, which does not exist", path)
    return None


def load_dataset(source: str | Path) -> Dataset:
    """Open a data set from a ``data.yaml``, a folder holding one, or a bare ``images/<split>`` folder tree.

    A folder of images with no labels at all (e.g. threat-free bags) loads as a single ``val`` split with no
    class names, which is what false-alarm evaluation needs.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetError("no such file or folder", source)
    if source.is_dir():
        data_yaml = _data_yaml_in(source)
        if data_yaml is not None:
            return load_dataset(data_yaml)
        if (source / "images").is_dir():
            folders = {p.name: [p] for p in sorted((source / "images").iterdir()) if p.is_dir()}
            return Dataset(root=source.resolve(), names=[], splits=folders)
        return Dataset(root=source.resolve(), names=[], splits={"val": [source.resolve()]})
    raw = _read_yaml(source)
    try:
        spec = DataYaml.model_validate(raw)
    except ValidationError as err:
        raise DatasetError(f"invalid data.yaml ({validation_problems(err)})", source) from err
    names = spec.name_list()
    if spec.nc is not None and spec.nc != len(names):
        raise DatasetError(f"nc is {spec.nc} but names lists {len(names)} classes", source)
    base = source.parent.resolve()
    if spec.path:
        base = Path(spec.path) if Path(spec.path).is_absolute() else (base / spec.path).resolve()
    splits: dict[str, list[Path]] = {}
    for split in SPLIT_NAMES:
        value = getattr(spec, split)
        if value:
            entries = [value] if isinstance(value, str) else value
            splits[split] = [Path(e) if Path(e).is_absolute() else (base / e) for e in entries]
    threats = spec.threats or []
    unknown = [t for t in threats if t.lower() not in {n.lower() for n in names}]
    if unknown:
        raise DatasetError(f"threats lists classes not in names: {unknown}", source)
    return Dataset(root=base, names=names, splits=splits, threats=threats, yaml_path=source.resolve())


def write_data_yaml(
    root: Path,
    names: list[str],
    splits: dict[str, str],
    threats: list[str] | None = None,
    absolute: bool = False,
) -> Path:
    """Write ``root/data.yaml`` (atomically). Split paths are yaml-relative unless ``absolute``."""
    root = Path(root)
    body: dict[str, Any] = {}
    if absolute:
        body["path"] = str(root.resolve())
    body.update(splits)
    body["nc"] = len(names)
    body["names"] = dict(enumerate(names))
    if threats:
        body["threats"] = list(threats)
    return atomic_write_yaml(root / "data.yaml", body)


def ultralytics_yaml(dataset: Dataset, cache_dir: Path) -> Path:
    """A data.yaml Ultralytics reads the way xraydet does.

    A relative ``path:`` key means "relative to this yaml" to xraydet but "relative to Ultralytics' datasets
    folder" to Ultralytics. For such a file, write a copy with that key made absolute into ``cache_dir``
    (named by content, so repeated runs reuse it) and return the copy; otherwise return the file itself.
    """
    if dataset.yaml_path is None:
        raise DatasetError("has no data.yaml (class names and splits are needed)", dataset.root)
    raw = _read_yaml(dataset.yaml_path)
    key = raw.get("path")
    if not key or Path(str(key)).is_absolute():
        return dataset.yaml_path
    resolved = {**raw, "path": str(dataset.root)}
    text = yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    target = Path(cache_dir) / f"{dataset.yaml_path.stem}-{digest}.yaml"
    if not target.exists():
        atomic_write_yaml(target, resolved)
    return target
