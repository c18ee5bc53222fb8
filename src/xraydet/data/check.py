"""``xraydet data check``: find what is wrong with a YOLO data set before a training run finds it.

Every image is opened (header only by default: PIL reads the size and the file must end in its format's end
marker, JPEG ``FF D9`` / PNG ``IEND``; ``deep=True`` decodes every pixel) and hashed (SHA-1 of the file bytes)
to find exact duplicates within a split and across splits. Every label line is parsed and checked against the
class list and the unit square. The result is a :class:`CheckReport` whose problems each carry a code
(:data:`CODES`), a severity, the file and the line.

Severity policy: an *error* is something that makes training or evaluation wrong or makes Ultralytics drop the
image (unreadable, truncated or unsupported-format images, bad lines, label files mixing box and polygon rows,
class ids outside ``names``, boxes out of bounds or of zero size, and the same image in two splits: train/val
leakage inflates every validation number, so it is an error, not a warning). A *warning* is worth a look but
may be intended (background images without a label file, duplicates inside one split, class imbalance, tiny
boxes). A folder of images with no class names (threat-free
negatives) is background by design, so its missing label files are not reported.

Each check is a small pure function of bytes or text, so it can be tested on hand-made inputs; the driver
:func:`check_dataset` runs them over a thread pool (hashing and JPEG decoding release the GIL).
The per-file checks live in :mod:`xraydet.data.image_check` and :mod:`xraydet.data.label_check`, the
records they become (:data:`CODES`, :class:`Problem`, :class:`CheckReport`) in :mod:`xraydet.data.problems`;
this module holds the data-set level checks and the driver, and re-exports the rest.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from xraydet.data.dataset import DatasetError, duplicate_names, label_path_for, load_dataset
from xraydet.data.image_check import (
    MIN_IMAGE_SIDE,
    TAIL_SEARCH_BYTES,
    ImageInfo,
    end_marker_status,
    inspect_image_bytes,
)
from xraydet.data.label_check import (
    COORD_TOLERANCE,
    LabelInfo,
    check_box,
    check_label_line,
    inspect_label_text,
    read_label,
)
from xraydet.data.problems import CODES, IMBALANCE_RATIO, CheckReport, Problem, Severity, problem
from xraydet.data.stats import DatasetStats, StatsBuilder, imbalance

__all__ = [
    "BATCH",
    "CODES",
    "COORD_TOLERANCE",
    "IMBALANCE_RATIO",
    "MIN_IMAGE_SIDE",
    "TAIL_SEARCH_BYTES",
    "CheckReport",
    "ImageInfo",
    "LabelInfo",
    "Problem",
    "SampleResult",
    "Severity",
    "check_box",
    "check_dataset",
    "check_label_line",
    "class_problems",
    "default_workers",
    "duplicate_problems",
    "end_marker_status",
    "inspect_image_bytes",
    "inspect_label_text",
    "inspect_sample",
    "orphan_labels",
    "problem",
    "read_label",
]

log = logging.getLogger(__name__)

BATCH = 64  # images per thread-pool task: one future per image costs more than a header read


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
        info = inspect_image_bytes(data, image.suffix, deep, name=image.name)
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
    """Label files beside the ``labels`` a split expects that belong to no image (``classes.txt`` and hidden
    files such as macOS ``._x.txt`` aside)."""
    expected = set(labels)
    found = []
    for folder in sorted({p.parent for p in expected}):
        try:
            entries = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".txt"))
        except OSError:  # no label folder at all: every image is a background image, reported per image
            continue
        for name in entries:
            label = folder / name
            if name != "classes.txt" and not name.startswith(".") and label not in expected:
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
        DatasetError: when the data set itself cannot be opened (no data.yaml, invalid names) or has no
            train, val or test split to check.

    Example:
        >>> report = check_dataset("../shared/data/opixray/data.yaml")  # doctest: +SKIP
        >>> report.n_images, report.ok  # doctest: +SKIP
        (2350, True)
    """
    start = time.perf_counter()
    ds = load_dataset(path)
    chosen = list(dict.fromkeys(splits)) if splits else list(ds.splits)  # a split named twice is one split
    if not chosen:
        raise DatasetError(
            "no splits to check: expected train, val or test (a folder or list of images) in data.yaml",
            ds.yaml_path or ds.root,
        )
    unknown = [s for s in chosen if s not in ds.splits]
    if unknown:
        raise DatasetError(f"no split(s) {unknown} (has: {', '.join(ds.splits) or 'none'})", ds.yaml_path)
    problems: list[Problem] = [
        problem("class-name-duplicate", f"names {dupe} in data.yaml", ds.yaml_path)
        for dupe in duplicate_names(ds.names)
    ]
    work: list[tuple[str, Path]] = []
    per_split: dict[str, list[Path]] = {}
    for split in chosen:
        try:
            images = ds.images(split)
        except DatasetError as err:
            problems.append(problem("split-missing", err.message, err.path, split=split))
            continue
        problems.extend(
            problem("image-unreadable", f"symlink to a missing file ({os.readlink(link)})", link, split=split)
            for link in ds.dangling_images(split)
        )
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
