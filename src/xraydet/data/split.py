"""``xraydet data split``: a seeded, class-stratified train/val(/test) split into a new YOLO folder.

All images of the source (every split it has) are pooled and grouped by a *stratum*: the rarest class present
in the image (rarest by number of images over the whole set), so that a rare class is spread over the splits
even when it always shares its images with common classes; images without boxes form their own stratum and are
spread in proportion like any other. Split sizes per stratum are apportioned by largest remainder so that the
totals match ``round(N * fraction)`` exactly. Same source, fractions and seed give the same split.

The unit that is assigned is a *content group*: the images whose bytes are identical (same SHA-1, the hash
``data check`` uses to report ``split-leak``), wherever they lie in the source. A group goes to one split
whole, so a copy of a train image can never land in val; its stratum is the rarest class over all its copies'
labels, and ``N`` above counts groups (distinct images). With no duplicates every group is one image.
A label line that does not parse or whose class id is not an index into ``names`` is refused, naming the
file and line, before anything is written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel

from xraydet.data.dataset import label_path_for, load_dataset, read_label_file, write_data_yaml
from xraydet.data.stats import DatasetStats, StatsBuilder
from xraydet.errors import ConfigError, XrayDetError
from xraydet.io import atomic_directory, refuse_output_over_inputs

log = logging.getLogger(__name__)

BACKGROUND = -1  # stratum of images without boxes
K = TypeVar("K", bound=Hashable)


class SplitResult(BaseModel):
    """What was written: the output folder, images per split, the per-split class counts, and how many groups
    of identical images (``duplicate_images`` images in all) were each kept in one split."""

    out: Path
    source: str
    seed: int
    val: float
    test: float
    names: list[str]
    counts: dict[str, int]
    stats: DatasetStats
    duplicate_groups: int = 0
    duplicate_images: int = 0


def content_digest(path: Path) -> str:
    """SHA-1 of a file's bytes, the digest ``data check`` compares to find identical images."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def group_by_content(digests: Sequence[str]) -> list[list[int]]:
    """Indices of equal digests grouped, groups in order of their first member.

    Example:
        >>> group_by_content(["x", "y", "x", "z"])
        [[0, 2], [1], [3]]
    """
    groups: dict[str, list[int]] = {}
    for i, digest in enumerate(digests):
        groups.setdefault(digest, []).append(i)
    return list(groups.values())


def stratum_keys(class_sets: Sequence[set[int]]) -> list[int]:
    """The stratum of each image: its rarest class by image count (ties: lower id), or ``BACKGROUND``.

    Example:
        >>> stratum_keys([{0}, {0, 1}, set(), {0}])
        [0, 1, -1, 0]
    """
    freq: dict[int, int] = {}
    for classes in class_sets:
        for c in classes:
            freq[c] = freq.get(c, 0) + 1
    return [min(classes, key=lambda c: (freq[c], c)) if classes else BACKGROUND for classes in class_sets]


def apportion(sizes: Mapping[K, int], target: int) -> dict[K, int]:
    """Share ``target`` items among groups in proportion to ``sizes`` (largest remainder, ties by key order).

    Example:
        >>> apportion({"a": 10, "b": 5, "c": 5}, 4)
        {'a': 2, 'b': 1, 'c': 1}
    """
    total = sum(sizes.values())
    if total == 0 or target <= 0:
        return dict.fromkeys(sizes, 0)
    target = min(target, total)
    share = {k: n * target // total for k, n in sizes.items()}  # integer arithmetic: ties are exact
    remainder = {k: n * target % total for k, n in sizes.items()}
    keys = list(sizes)
    left = target - sum(share.values())
    for k in sorted(keys, key=lambda k: (-remainder[k], keys.index(k)))[:left]:
        share[k] += 1
    return share


def assign_splits(class_sets: Sequence[set[int]], val: float, test: float = 0.0, seed: int = 0) -> list[str]:
    """The split (``train``/``val``/``test``) of each image, stratified by :func:`stratum_keys` and seeded.

    Example:
        >>> splits = assign_splits([{0}] * 8 + [{1}] * 2, val=0.5, seed=0)
        >>> splits.count("val"), splits[8:].count("val")
        (5, 1)
    """
    validate_fractions(val, test)
    keys = stratum_keys(class_sets)
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    groups = dict(sorted(groups.items()))
    n = len(class_sets)
    sizes = {k: len(v) for k, v in groups.items()}
    n_test = apportion(sizes, round(n * test))
    n_val = apportion({k: sizes[k] - n_test[k] for k in sizes}, round(n * val))
    rng = np.random.default_rng(seed)
    result = ["train"] * n
    for k, members in groups.items():
        order = [members[i] for i in rng.permutation(len(members))]
        for i in order[: n_test[k]]:
            result[i] = "test"
        for i in order[n_test[k] : n_test[k] + n_val[k]]:
            result[i] = "val"
    return result


def validate_fractions(val: float, test: float) -> None:
    """Refuse shares out of range; a val share of 0 too: the split would point val at an empty folder."""
    if not 0 < val < 1:
        raise ConfigError(
            f"--val {val}: must be above 0 and below 1 (training and evaluation need a val split)"
        )
    if not (0 <= test < 1 and val + test < 1):
        raise ConfigError(
            f"--val {val} and --test {test}: --test must be >= 0 and the two add up to less than 1"
        )


def _refuse_empty_splits(
    assigned: Sequence[str], split_names: Sequence[str], val: float, test: float, n: int
) -> None:
    """Refuse a split that would leave ``train``, ``val`` or (when asked for) ``test`` without images."""
    for name, share in (("val", val), ("test", test)):
        if name in split_names and name not in assigned:
            raise ConfigError(
                f"--{name} {share}: gives no {name} image out of {n}; raise --{name} or add images"
            )
    if "train" not in assigned:
        raise ConfigError(
            f"--val {val} and --test {test}: leave no train image out of {n}; lower them or add images"
        )


def share_drift(counts: dict[str, int], asked: dict[str, float], tolerance: float = 0.05) -> list[str]:
    """Warnings for splits whose share of images is off what was asked by more than ``tolerance``: sizes
    count groups of identical images, so a large group can tip a split.

    Example:
        >>> share_drift({"train": 20, "val": 12}, {"val": 0.2})
        ['val holds 38% of the images (12 of 32), not the 20% asked (identical images stay together)']
    """
    total = sum(counts.values())
    out = []
    for split, share in asked.items():
        got = counts.get(split, 0) / total if total else 0.0
        if split in counts and abs(got - share) > tolerance:
            out.append(
                f"{split} holds {got:.0%} of the images ({counts[split]} of {total}), not the {share:.0%} "
                "asked (identical images stay together)"
            )
    return out


def place_file(src: Path, dest: Path, link: bool) -> None:
    """Copy ``src`` to ``dest``; with ``link`` a hard link, or a symlink where a hard link cannot be made."""
    if link:
        try:
            os.link(src, dest)
            return
        except OSError:
            dest.symlink_to(src.resolve())
            return
    shutil.copy2(src, dest)


def unique_name(image: Path, prefix: str, taken: set[str]) -> str:
    """``image.name`` unless its stem is taken (labels go by stem), then ``prefix__name``, then numbered.

    Example:
        >>> unique_name(Path("a.jpg"), "train", {"a"})
        'train__a.jpg'
    """
    numbered = (f"{prefix}__{image.stem}_{i}{image.suffix}" for i in range(2, 1_000_000))
    for name in itertools.chain([image.name, f"{prefix}__{image.name}"], numbered):
        stem = Path(name).stem
        if stem not in taken:
            taken.add(stem)
            return name
    raise RuntimeError(f"no free name for {image}")  # unreachable in practice


def pool_images(images: Mapping[str, Sequence[Path]]) -> list[tuple[str, Path]]:
    """``(source split, image)`` of every image, sorted by path then split; an image two splits list (train
    and val naming one folder) is pooled once, under the first split by name.

    Example:
        >>> pool = pool_images({"val": [Path("b.png"), Path("a.png")], "train": [Path("a.png")]})
        >>> [(split, image.name) for split, image in pool]
        [('train', 'a.png'), ('val', 'b.png')]
    """
    pool: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for src_split, img in sorted(
        {(s, i) for s, found in images.items() for i in found}, key=lambda t: (str(t[1]), t[0])
    ):
        if (resolved := img.resolve()) not in seen:
            seen.add(resolved)
            pool.append((src_split, img))
    return pool


def split_dataset(
    source: str | Path,
    out: str | Path,
    val: float = 0.15,
    test: float = 0.0,
    seed: int = 0,
    link: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SplitResult:
    """Pool all images of ``source`` and write a stratified split to ``out`` (atomically).

    Identical images (same bytes, different paths) are kept together in one split; see the module docstring.

    Raises:
        DatasetError: a label line that does not parse or has a class id outside ``names`` (nothing is
            written; run ``xraydet data check`` first).
        ConfigError: fractions out of range.
        XrayDetError: ``out`` exists and ``overwrite`` is False.

    Example:
        >>> split_dataset("data/opixray", "data/opixray-resplit", val=0.15, seed=0).counts  # doctest: +SKIP
        {'train': 1998, 'val': 352}
    """
    validate_fractions(val, test)
    if seed < 0:  # numpy's generator refuses it with a traceback
        raise ConfigError(f"--seed {seed}: must be >= 0")
    out = Path(out)
    if out.exists() and not overwrite:
        raise XrayDetError(f"{out} already exists; pass --overwrite to replace it")
    ds = load_dataset(source)
    listing = ds.listing()  # one walk of the source: for the output check and for the work
    refuse_output_over_inputs(out, listing.locations)
    pool = pool_images(listing.images)
    # a class id outside names would be copied unchanged and make Ultralytics drop the image: refused here
    labels = [label_path_for(img) for _, img in pool]
    rows = [read_label_file(label, len(ds.names)) if label.exists() else np.zeros((0, 5)) for label in labels]
    class_sets = [set(r[:, 0].astype(int).tolist()) for r in rows]
    groups = group_by_content([content_digest(img) for _, img in pool])
    group_splits = assign_splits([set().union(*(class_sets[i] for i in g)) for g in groups], val, test, seed)
    split_names = ["train", "val"] + (["test"] if test > 0 else [])
    _refuse_empty_splits(group_splits, split_names, val, test, len(groups))
    assigned = [""] * len(pool)
    for members, group_split in zip(groups, group_splits, strict=True):
        for i in members:
            assigned[i] = group_split
    duplicates = [g for g in groups if len(g) > 1]
    builder = StatsBuilder(ds.names)
    for s in split_names:
        builder.touch(s)
    manifest: list[dict[str, str]] = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        taken: dict[str, set[str]] = {s: set() for s in split_names}
        for (src_split, image), r, split in zip(pool, rows, assigned, strict=True):
            name = unique_name(image, src_split, taken[split])
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
            place_file(image, tmp / "images" / split / name, link)
            label = label_path_for(image)
            if label.exists():
                shutil.copy2(label, tmp / "labels" / split / f"{Path(name).stem}.txt")
            builder.add(split, r[:, 0].astype(int), r[:, 3:5])
            manifest.append({"split": split, "image": f"images/{split}/{name}", "source": str(image)})
            if progress:
                progress(1)
        for s in split_names:
            (tmp / "images" / s).mkdir(parents=True, exist_ok=True)
        write_data_yaml(tmp, ds.names, {s: f"images/{s}" for s in split_names}, ds.threats)
        body = {
            "source": str(ds.yaml_path or ds.root),
            "val": val,
            "test": test,
            "seed": seed,
            "duplicate_groups": len(duplicates),
            "duplicate_images": sum(len(g) for g in duplicates),
            "files": manifest,
        }
        (tmp / "split.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    counts = {s: assigned.count(s) for s in split_names}
    log.info("split %d images into %s", len(pool), counts)
    if duplicates:
        log.info("kept %d group(s) of identical images together, each in one split", len(duplicates))
        for message in share_drift(counts, {"val": val, "test": test}):
            log.warning(message)
    return SplitResult(
        out=out,
        source=str(ds.yaml_path or ds.root),
        seed=seed,
        val=val,
        test=test,
        names=ds.names,
        counts=counts,
        stats=builder.finish(),
        duplicate_groups=len(duplicates),
        duplicate_images=sum(len(g) for g in duplicates),
    )
