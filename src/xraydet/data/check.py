"""``xraydet data check``: find what is wrong with a YOLO data set before a training run finds it.

Every image is opened (header only by default: PIL reads the size and the file must end in its format's end
marker, JPEG ``FF D9`` / PNG ``IEND``; ``deep=True`` decodes every pixel) and hashed (SHA-1 of the file bytes)
to find exact duplicates within a split and across splits. Every label line is parsed and checked against the
class list and the unit square. The result is a :class:`CheckReport` whose problems each carry a code
(:data:`CODES`), a severity, the file and the line.

Severity policy: an *error* is something that makes training or evaluation wrong or makes Ultralytics drop the
image (unreadable or truncated images, bad lines, class ids outside ``names``, boxes out of bounds or of zero
size, and the same image in two splits: train/val leakage inflates every validation number, so it is an error,
not a warning). A *warning* is worth a look but may be intended (background images without a label file,
duplicates inside one split, class imbalance, tiny boxes). A folder of images with no class names (threat-free
negatives) is background by design, so its missing label files are not reported.

Each check is a small pure function of bytes or text, so it can be tested on hand-made inputs; the driver
:func:`check_dataset` runs them over a thread pool (hashing and JPEG decoding release the GIL).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, computed_field

from xraydet.data.dataset import DatasetError, label_path_for, load_dataset, parse_label_line
from xraydet.data.stats import DatasetStats, StatsBuilder, imbalance

log = logging.getLogger(__name__)

COORD_TOLERANCE = (
    0.01  # Ultralytics accepts coordinates up to 1.01 and down to -0.01; beyond, it drops the image
)
MIN_IMAGE_SIDE = 10  # Ultralytics rejects smaller images
IMBALANCE_RATIO = 0.1  # warn when the rarest class has fewer than this share of the commonest's instances
TAIL_SEARCH_BYTES = 1024  # where to look for an end marker followed by padding
BATCH = 64  # images per thread-pool task: one future per image costs more than a header read


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


# code -> (severity, what it means). The table in the CLI help and the docs is generated from this.
CODES: dict[str, tuple[Severity, str]] = {
    "image-unreadable": (Severity.ERROR, "the file cannot be opened or identified as an image"),
    "image-truncated": (
        Severity.ERROR,
        "the end marker is missing (header mode) or the pixels do not decode",
    ),
    "image-too-small": (Severity.ERROR, f"a side is under {MIN_IMAGE_SIDE} px (Ultralytics drops the image)"),
    "image-trailing-bytes": (
        Severity.WARNING,
        "bytes after the end marker (Ultralytics rewrites such JPEGs)",
    ),
    "image-format-mismatch": (
        Severity.WARNING,
        "the suffix does not match the content (e.g. a PNG named .jpg)",
    ),
    "image-exif-rotated": (
        Severity.WARNING,
        "EXIF orientation is set: tools disagree on which way labels go",
    ),
    "label-unreadable": (Severity.ERROR, "the label file cannot be read as UTF-8 text"),
    "label-syntax": (Severity.ERROR, "a line is not 'class cx cy w h' (or a polygon) of numbers"),
    "class-out-of-range": (Severity.ERROR, "a class id is not an index into names"),
    "box-degenerate": (Severity.ERROR, "a box has zero or negative width or height"),
    "box-outside": (Severity.ERROR, "a coordinate lies outside [0, 1] beyond the 0.01 tolerance"),
    "box-clipped": (Severity.WARNING, "a box reaches past the image edge (training clips it)"),
    "box-tiny": (Severity.WARNING, "a box is under 1 px wide or high"),
    "box-duplicate": (Severity.WARNING, "the same line twice in one label file (Ultralytics drops the copy)"),
    "label-missing": (Severity.WARNING, "an image has no label file (trained as a background image)"),
    "label-orphan": (Severity.WARNING, "a label file has no image"),
    "duplicate-image": (Severity.WARNING, "identical image bytes twice within one split"),
    "split-leak": (Severity.ERROR, "identical image bytes in two splits (train/val leakage)"),
    "split-missing": (Severity.ERROR, "a split named in data.yaml has no folder or list"),
    "split-empty": (Severity.ERROR, "a split has no images"),
    "class-absent": (Severity.WARNING, "a class has no instances in a split"),
    "class-imbalance": (
        Severity.WARNING,
        f"the rarest class has < {IMBALANCE_RATIO:.0%} of the commonest's boxes",
    ),
}


class Problem(BaseModel):
    """One finding: what (``code``), how bad, where (``file``, 1-based ``line``) and a message to act on."""

    code: str
    severity: Severity
    message: str
    file: str | None = None
    line: int | None = None
    split: str | None = None

    @property
    def where(self) -> str:
        if self.file is None:
            return ""
        return self.file if self.line is None else f"{self.file}:{self.line}"


def problem(
    code: str, message: str, file: Path | str | None = None, line: int | None = None, split: str | None = None
) -> Problem:
    """A :class:`Problem` whose severity comes from :data:`CODES`."""
    return Problem(
        code=code,
        severity=CODES[code][0],
        message=message,
        file=None if file is None else str(file),
        line=line,
        split=split,
    )


class CheckReport(BaseModel):
    """Everything ``check`` found; ``ok`` is True when there is no error (warnings allowed)."""

    dataset: str
    names: list[str]
    threats: list[str]
    splits: list[str]
    deep: bool
    n_images: int
    n_label_files: int
    stats: DatasetStats
    problems: list[Problem]
    elapsed_s: float

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.WARNING]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.errors

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_errors(self) -> int:
        return len(self.errors)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_warnings(self) -> int:
        return len(self.warnings)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def images_per_s(self) -> float:
        return self.n_images / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def counts_by_code(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for p in self.problems:
            counts[p.code] += 1
        return dict(sorted(counts.items(), key=lambda kv: (CODES[kv[0]][0] != Severity.ERROR, kv[0])))


# ------------------------------------------------------------------------------------------ image checks

_SUFFIX_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


def end_marker_status(fmt: str | None, data: bytes) -> str | None:
    """``"ok"``, ``"trailing"`` (marker followed by extra bytes), ``"missing"`` (truncated), or None if the
    format has no end marker this check knows.

    Example:
        >>> end_marker_status("JPEG", b"\\xff\\xd8...\\xff\\xd9"), end_marker_status("JPEG", b"\\xff\\xd8...")
        ('ok', 'missing')
    """
    markers = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
    if fmt == "WEBP":  # RIFF header declares the size: 8 + little-endian uint32 at offset 4
        declared = 8 + int.from_bytes(data[4:8], "little") if len(data) >= 8 else -1
        return "ok" if len(data) == declared else ("trailing" if len(data) > declared else "missing")
    if fmt == "BMP":
        declared = int.from_bytes(data[2:6], "little") if len(data) >= 6 else -1
        return "ok" if len(data) == declared else ("trailing" if len(data) > declared else "missing")
    marker = markers.get(fmt or "")
    if marker is None:
        return None
    if data.endswith(marker):
        return "ok"
    return "trailing" if marker in data[-TAIL_SEARCH_BYTES:] else "missing"


@dataclass
class ImageInfo:
    """What one image's bytes say: its digest, size, format and problems."""

    digest: str | None = None
    width: int | None = None
    height: int | None = None
    fmt: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (code, message)


def inspect_image_bytes(data: bytes, suffix: str, deep: bool = False) -> ImageInfo:
    """Check one image given its bytes (pure: no file access). Never raises on bad content."""
    info = ImageInfo(digest=hashlib.sha1(data, usedforsecurity=False).hexdigest())
    if not data:
        info.problems.append(("image-unreadable", "empty file (0 bytes)"))
        return info
    decode_error: Exception | None = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            info.fmt, (info.width, info.height) = im.format, im.size
            orientation = im.getexif().get(0x0112) if info.fmt in ("JPEG", "MPO", "TIFF") else None
            if deep:
                try:
                    im.load()
                except Exception as err:  # any decoder failure on bad bytes is a finding, not a crash
                    decode_error = err
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        info.problems.append(("image-unreadable", f"not an image PIL can open ({err})"))
        return info
    except Exception as err:  # a header that makes PIL fail in any way is a finding, not a crash
        info.problems.append(("image-unreadable", f"cannot read the header ({type(err).__name__}: {err})"))
        return info
    status = end_marker_status(info.fmt, data)
    if status == "missing":
        info.problems.append(
            ("image-truncated", f"{info.fmt} ends without its end marker: the file is cut short")
        )
    elif decode_error is not None:
        info.problems.append(
            ("image-corrupt", f"pixels do not decode ({type(decode_error).__name__}: {decode_error})")
        )
    if status == "trailing":
        info.problems.append(("image-trailing-bytes", f"{info.fmt} has extra bytes after its end marker"))
    if min(info.width or 0, info.height or 0) < MIN_IMAGE_SIDE:
        info.problems.append(("image-too-small", f"{info.width}x{info.height} px"))
    expected = _SUFFIX_FORMATS.get(suffix.lower())
    if expected and info.fmt and info.fmt != expected and (expected, info.fmt) != ("JPEG", "MPO"):
        info.problems.append(("image-format-mismatch", f"content is {info.fmt} but the suffix is {suffix}"))
    if orientation not in (None, 1):
        info.problems.append(
            (
                "image-exif-rotated",
                f"EXIF orientation {orientation}: OpenCV rotates the image, PIL does not; re-save it upright",
            )
        )
    return info


# ------------------------------------------------------------------------------------------ label checks


def check_label_line(
    text: str, nc: int, width: int | None = None, height: int | None = None
) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
    """Check one non-empty label line; returns the ``(class, cx, cy, w, h)`` row if usable, and its problems.

    A row is usable for statistics when it parses and its class id is valid, even if its box is bad.

    Example:
        >>> row, found = check_label_line("9 0.5 0.5 0.1 0.1", nc=5)
        >>> row is None, found[0][0]
        (True, 'class-out-of-range')
    """
    try:
        row = parse_label_line(text, "", 0)
        values = [float(v) for v in text.split()[1:]]
    except (DatasetError, ValueError, OverflowError) as err:
        message = (
            str(err).removeprefix(":0: ") if isinstance(err, DatasetError) else f"{err}: {text.strip()!r}"
        )
        return None, [("label-syntax", message)]
    found: list[tuple[str, str]] = []
    cls = int(row[0])
    if cls >= nc:
        found.append(("class-out-of-range", f"class id {cls} but names has {nc} classes (0..{nc - 1})"))
    if not all(math.isfinite(v) for v in values):
        found.append(("label-syntax", f"non-finite coordinate in {text.strip()!r}"))
        return None, found
    found.extend(check_box(values, width, height))
    return (row if cls < nc else None), found


def check_box(
    values: Sequence[float], width: int | None = None, height: int | None = None
) -> list[tuple[str, str]]:
    """Range and size checks of one box ``cx cy w h`` (or polygon ``x1 y1 x2 y2 ...``) in normalised units.

    Example:
        >>> [code for code, _ in check_box([0.5, 0.5, 0.0, 0.2])]
        ['box-degenerate']
        >>> [code for code, _ in check_box([1.3, 0.5, 0.1, 0.2])]
        ['box-outside']
    """
    found: list[tuple[str, str]] = []
    low, high = -COORD_TOLERANCE, 1 + COORD_TOLERANCE
    bad = [v for v in values if not low <= v <= high]
    if bad:
        found.append(("box-outside", f"coordinate(s) {', '.join(f'{v:g}' for v in bad)} outside [0, 1]"))
    if len(values) == 4:
        cx, cy, w, h = values
    else:
        xs, ys = values[0::2], values[1::2]
        cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    if w <= 0 or h <= 0:
        found.append(("box-degenerate", f"width {w:g}, height {h:g}: a box needs both > 0"))
        return found
    if not bad:
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        over = max(-x1, -y1, x2 - 1, y2 - 1)
        if over > COORD_TOLERANCE:
            found.append(("box-clipped", f"box reaches {over:.3f} past the image edge"))
    if width and height and (w * width < 1 or h * height < 1):
        found.append(("box-tiny", f"box is {w * width:.2f} x {h * height:.2f} px"))
    return found


@dataclass
class LabelInfo:
    exists: bool
    rows: np.ndarray  # usable (N, 5) rows
    problems: list[tuple[str, str, int | None]]  # (code, message, line)


def inspect_label_text(text: str, nc: int, width: int | None = None, height: int | None = None) -> LabelInfo:
    """Check every line of one label file's text (pure)."""
    rows: list[np.ndarray] = []
    found: list[tuple[str, str, int | None]] = []
    seen: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row, line_problems = check_label_line(line, nc, width, height)
        found.extend((code, msg, number) for code, msg in line_problems)
        key = tuple(line.split())
        if key in seen:
            found.append(("box-duplicate", f"same as line {seen[key]}", number))
        else:
            seen[key] = number
            if row is not None:
                rows.append(row)
    return LabelInfo(True, np.stack(rows) if rows else np.zeros((0, 5)), found)


def read_label(path: Path, nc: int, width: int | None, height: int | None) -> LabelInfo:
    """Read and check one label file; a missing file is a background image, not an error here."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LabelInfo(False, np.zeros((0, 5)), [])
    except OSError as err:
        return LabelInfo(True, np.zeros((0, 5)), [("label-unreadable", f"{type(err).__name__}: {err}", None)])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return LabelInfo(True, np.zeros((0, 5)), [("label-unreadable", f"not UTF-8 text ({err})", None)])
    return inspect_label_text(text, nc, width, height)


# ------------------------------------------------------------------------------------------ per sample


@dataclass
class SampleResult:
    split: str
    image: Path
    label: Path
    info: ImageInfo
    label_info: LabelInfo


def inspect_sample(split: str, image: Path, nc: int, deep: bool) -> SampleResult:
    """Read one image and its label file and check both; never raises on bad files."""
    try:
        data = image.read_bytes()
        info = inspect_image_bytes(data, image.suffix, deep)
    except OSError as err:
        info = ImageInfo(problems=[("image-unreadable", f"{type(err).__name__}: {err}")])
    label = label_path_for(image)
    return SampleResult(split, image, label, info, read_label(label, nc, info.width, info.height))


# ------------------------------------------------------------------------------------------ data-set checks


def duplicate_problems(digests: Iterable[tuple[str, Path, str]], split_order: Sequence[str]) -> list[Problem]:
    """Exact duplicates from ``(split, image, digest)``: within a split a warning, across splits an error.

    The first copy (by split order, then path) is the original; every other copy is reported and names it.

    Example:
        >>> pairs = [("train", Path("a.jpg"), "x"), ("val", Path("b.jpg"), "x")]
        >>> found = duplicate_problems(pairs, ["train", "val"])
        >>> [(p.code, p.file) for p in found]
        [('split-leak', 'b.jpg')]
    """
    rank = {s: i for i, s in enumerate(split_order)}
    groups: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for split, image, digest in digests:
        groups[digest].append((split, image))
    found: list[Problem] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: (rank.get(m[0], len(rank)), str(m[1])))
        first_split, first = members[0]
        for split, image in members[1:]:
            if split == first_split:
                found.append(problem("duplicate-image", f"identical to {first}", image, split=split))
            else:
                found.append(
                    problem(
                        "split-leak",
                        f"identical to {first_split} image {first}: the same image in "
                        f"{first_split} and {split} inflates validation scores; "
                        f"remove one copy",
                        image,
                        split=split,
                    )
                )
    return found


def orphan_labels(split: str, labels: Iterable[Path]) -> list[Problem]:
    """Label files beside the ``labels`` a split expects that belong to no image (``classes.txt`` aside)."""
    expected = set(labels)
    found = []
    for folder in sorted({p.parent for p in expected}):
        try:
            entries = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".txt"))
        except OSError:  # no label folder at all: every image is a background image, reported per image
            continue
        for name in entries:
            label = folder / name
            if name != "classes.txt" and label not in expected:
                found.append(
                    problem("label-orphan", "no image with this stem in the split", label, split=split)
                )
    return found


def class_problems(stats: DatasetStats, ratio: float = IMBALANCE_RATIO) -> list[Problem]:
    """Imbalance over all splits and classes absent from a split."""
    found: list[Problem] = []
    if not stats.names:
        return found
    totals = stats.instances_per_class()
    share, rare, common = imbalance(totals)
    if share is not None and rare is not None and common is not None and share < ratio:
        found.append(
            problem(
                "class-imbalance",
                f"'{stats.names[rare]}' has {totals[rare]} instances, "
                f"'{stats.names[common]}' {totals[common]} ({share:.1%}); "
                "consider more data or class weights",
            )
        )
    for split, s in stats.splits.items():
        for cls, n in enumerate(s.instances):
            if n == 0:
                found.append(
                    problem("class-absent", f"no '{stats.names[cls]}' instances in {split}", split=split)
                )
    return found


def _sample_problems(r: SampleResult, labelled: bool) -> list[Problem]:
    out = [problem(code, msg, r.image, split=r.split) for code, msg in r.info.problems]
    if labelled and not r.label_info.exists:
        out.append(problem("label-missing", f"no label file {r.label.name}", r.image, split=r.split))
    out.extend(problem(code, msg, r.label, line, split=r.split) for code, msg, line in r.label_info.problems)
    return out


def default_workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def check_dataset(
    path: str | Path,
    deep: bool = False,
    splits: Sequence[str] | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check a data set (a data.yaml or a folder) and return every problem found.

    Args:
        path: data.yaml, a folder holding one, or an ``images/<split>`` tree.
        deep: decode every pixel instead of checking headers and end markers (about 5x slower).
        splits: only these splits (default: all in data.yaml); duplicates are only compared among them.
        workers: threads (default: 2 per core, at most 8).
        progress: called with the number of images just finished, for a progress bar.
        on_start: called once with the total number of images.

    Raises:
        DatasetError: when the data set itself cannot be opened (no data.yaml, invalid names).

    Example:
        >>> report = check_dataset("../shared/data/opixray/data.yaml")  # doctest: +SKIP
        >>> report.n_images, report.ok  # doctest: +SKIP
        (2350, True)
    """
    start = time.perf_counter()
    ds = load_dataset(path)
    chosen = list(splits) if splits else list(ds.splits)
    unknown = [s for s in chosen if s not in ds.splits]
    if unknown:
        raise DatasetError(f"no split(s) {unknown} (has: {', '.join(ds.splits) or 'none'})", ds.yaml_path)
    problems: list[Problem] = []
    work: list[tuple[str, Path]] = []
    per_split: dict[str, list[Path]] = {}
    for split in chosen:
        try:
            images = ds.images(split)
        except DatasetError as err:
            problems.append(problem("split-missing", str(err), err.path, split=split))
            continue
        if not images:
            problems.append(
                problem("split-empty", f"{split} has no images", ds.splits[split][0], split=split)
            )
        per_split[split] = images
        work.extend((split, image) for image in images)
    if on_start:
        on_start(len(work))
    nc = len(ds.names)
    builder = StatsBuilder(ds.names)
    for split in per_split:  # every chosen split appears in the stats, even an empty one
        builder.touch(split)
    digests: list[tuple[str, Path, str]] = []
    n_labels = 0
    labels: dict[str, list[Path]] = {split: [] for split in per_split}
    batches = [work[i : i + BATCH] for i in range(0, len(work), BATCH)]
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for batch in pool.map(lambda items: [inspect_sample(s, p, nc, deep) for s, p in items], batches):
            for r in batch:
                problems.extend(_sample_problems(r, labelled=bool(nc)))
                n_labels += r.label_info.exists
                labels[r.split].append(r.label)
                rows = r.label_info.rows
                builder.add(r.split, rows[:, 0].astype(int), rows[:, 3:5], r.info.width, r.info.height)
                if r.info.digest:
                    digests.append((r.split, r.image, r.info.digest))
            if progress:
                progress(len(batch))
    for split, expected in labels.items():
        problems.extend(orphan_labels(split, expected))
    problems.extend(duplicate_problems(digests, chosen))
    stats = builder.finish()
    problems.extend(class_problems(stats))
    order = {s: i for i, s in enumerate(chosen)}
    problems.sort(key=lambda p: (order.get(p.split or "", -1), p.file or "", p.line or 0, p.code))
    return CheckReport(
        dataset=str(ds.yaml_path or ds.root),
        names=ds.names,
        threats=ds.threats,
        splits=chosen,
        deep=deep,
        n_images=len(work),
        n_label_files=n_labels,
        stats=stats,
        problems=problems,
        elapsed_s=time.perf_counter() - start,
    )
