"""``xraydet data merge``: several YOLO data sets into one, with one class list and every label id remapped.

Class names are fixed first (``--rename old=new``, a map file), then united by name: the first source's
classes keep their order, new names follow in order of appearance (optionally matching names
case-insensitively; the first spelling wins). Two classes of one source renamed to the same name merge into
one class on purpose. Every label line is rewritten with its new id (coordinates are kept byte for byte),
the sources' ``threats:`` lists are united, ``valid``/``validation`` splits go to ``val``, and an image whose
stem is already taken in its output split is renamed ``<source>__<name>`` (labels go by stem, so ``a.jpg``
and ``a.png`` collide too). The output is built in a temp folder and renamed into place only when complete.

Identical images (same bytes, by SHA-1, as ``data check`` compares them) are found across all sources and
splits. An image whose first copy (by split order train, val, test, then source order) is in another split
would leak into validation (``data check`` reports it as ``split-leak``): its val/test copy is dropped, with
a warning naming both files, unless ``keep_leaks``. Copies within one merged split are kept (``data check``:
``duplicate-image``, a warning) and reported. Every such pair is listed in the result's ``duplicates``.

Map file (YAML)::

    rename:            # applied to every source
      Knife: knife
    sources:           # applied to one source (keys: the source names printed by merge)
      opixray:
        Scissor: scissors

A flat mapping ``{old: new}`` is read as ``rename:``. Renames from ``--rename`` apply after the map file's.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel

from xraydet.config import read_utf8_text
from xraydet.data.dataset import (
    Dataset,
    DatasetError,
    DatasetListing,
    duplicate_names,
    label_path_for,
    load_dataset,
    parse_label_line,
    read_text_file,
    write_data_yaml,
)
from xraydet.data.split import content_digest, group_by_content, place_file, unique_name
from xraydet.data.stats import DatasetStats, StatsBuilder
from xraydet.errors import ConfigError, XrayDetError
from xraydet.io import atomic_directory, atomic_write_text, refuse_output_over_inputs

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
SPLIT_ORDER = ("train", "val", "test")
WARN_DUPLICATES = 20  # duplicate warnings logged one by one; the rest are counted (all are in merge.json)


class SourceSummary(BaseModel):
    """One source as merged: its classes, where each went, and its counts."""

    name: str
    path: str
    names: list[str]
    class_map: dict[str, str]
    id_map: list[int]
    split_map: dict[str, str]
    renamed_files: int
    dropped_files: int = 0  # val/test copies of an image also in train (or val), left out of the merge
    stats: DatasetStats


class DuplicateImage(BaseModel):
    """An image whose bytes equal another's in the merge: the copy kept (``kept``), this one (``duplicate``).

    ``kind`` is the code ``data check`` would report for ``duplicate``: ``split-leak`` (another split than the
    kept copy) or ``duplicate-image`` (the same split); ``dropped``: it was left out of the merged set.
    """

    kind: Literal["split-leak", "duplicate-image"]
    kept: str
    kept_split: str
    duplicate: str
    duplicate_split: str
    dropped: bool
    labels_differ: bool = False  # the two copies' labels (after the class remap) are not the same boxes


class MergeResult(BaseModel):
    """The merged class list and threats, per-source summaries and the merged counts."""

    out: Path
    dry_run: bool
    names: list[str]
    threats: list[str]
    sources: list[SourceSummary]
    stats: DatasetStats
    renamed_files: int
    keep_leaks: bool = False
    leaks_dropped: int = 0
    leaks_kept: int = 0
    duplicates_in_split: int = 0
    duplicates: list[DuplicateImage] = []


# ---------------------------------------------------------------------------------------------- names


def parse_renames(items: Iterable[str]) -> dict[str, str]:
    """``["old=new", ...]`` to a dict; a malformed item raises naming it.

    Example:
        >>> parse_renames(["Knife=knife", "Gun = gun"])
        {'Knife': 'knife', 'Gun': 'gun'}
    """
    result: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ConfigError(f"--rename expects OLD=NEW, got {item!r}")
        result[old.strip()] = new.strip()
    return result


def load_map_file(path: str | Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Read a map file: ``(renames for all sources, {source name: renames})``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(read_utf8_text(path))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the map file ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'rename:' and/or 'sources:'")
    raw = _map_sections(raw, path)

    def as_names(obj: Any, key: str) -> dict[str, str]:
        if obj is None:
            return {}
        if not isinstance(obj, dict) or not all(isinstance(v, str | int) for v in obj.values()):
            raise ConfigError(f"{path}: '{key}' must map old class names to new names")
        return {str(k): str(v) for k, v in obj.items()}

    per_source = raw.get("sources") or {}
    if not isinstance(per_source, dict):
        raise ConfigError(f"{path}: 'sources' must map source names to renames")
    return as_names(raw.get("rename"), "rename"), {
        str(s): as_names(m, f"sources.{s}") for s, m in per_source.items()
    }


MAP_KEYS = ("rename", "sources")


def _map_sections(raw: dict[Any, Any], path: Path) -> dict[Any, Any]:
    """A map file's ``rename:`` and ``sources:``; a flat ``{old: new}`` (no value a mapping) is ``rename:``.

    A mapping under any other top-level key is a misspelt section (``renmae:``), named as such.
    """
    if not set(MAP_KEYS) & set(raw) and not any(isinstance(v, dict) for v in raw.values()):
        return {"rename": raw}
    extra = sorted(map(str, set(raw) - set(MAP_KEYS)))
    if extra:
        close = {c for key in extra for c in difflib.get_close_matches(key, MAP_KEYS, n=1)}
        hint = f" (did you mean {' or '.join(repr(c) for c in sorted(close))}?)" if close else ""
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(repr, extra))}{hint}; a map file's top-level keys are "
            "'rename:' and 'sources:' (or give a flat mapping of old: new class names)"
        )
    return raw


def _key(name: str, case_insensitive: bool) -> str:
    return name.casefold() if case_insensitive else name


def rename_classes(
    names: Sequence[str], renames: dict[str, str], case_insensitive: bool = False
) -> list[str]:
    """Apply ``renames`` to ``names`` (matching case-insensitively if asked).

    Example:
        >>> rename_classes(["Knife", "gun"], {"knife": "blade"}, case_insensitive=True)
        ['blade', 'gun']
    """
    table = {_key(k, case_insensitive): v for k, v in renames.items()}
    return [table.get(_key(n, case_insensitive), n) for n in names]


def unify_names(
    per_source: Sequence[Sequence[str]], case_insensitive: bool = False
) -> tuple[list[str], list[list[int]]]:
    """The merged class list and, per source, the new id of each old id.

    Example:
        >>> unify_names([["knife", "gun"], ["Gun", "bottle", "knife"]], case_insensitive=True)
        (['knife', 'gun', 'bottle'], [[0, 1], [1, 2, 0]])
    """
    merged: list[str] = []
    index: dict[str, int] = {}
    maps: list[list[int]] = []
    for names in per_source:
        ids = []
        for name in names:
            key = _key(name, case_insensitive)
            if key not in index:
                index[key] = len(merged)
                merged.append(name)
            ids.append(index[key])
        maps.append(ids)
    return merged, maps


def unify_threats(
    per_source: Sequence[Sequence[str]], merged: Sequence[str], case_insensitive: bool = False
) -> list[str]:
    """The union of the (renamed) threat lists, spelt as in ``merged``, in order of appearance."""
    spelling = {_key(n, case_insensitive): n for n in merged}
    result: list[str] = []
    for threats in per_source:
        for t in threats:
            name = spelling.get(_key(t, case_insensitive))
            if name is not None and name not in result:
                result.append(name)
    return result


def threat_classes(ds: Dataset) -> list[str]:
    """A source's threat classes spelt as in its ``names`` (a data.yaml may list ``threats`` in another case:
    :attr:`Dataset.threat_ids` matches them ignoring case, so must the merge, or the threat is dropped).

    Example:
        >>> threat_classes(Dataset(Path("."), ["knife", "gun"], {}, ["Gun"]))
        ['gun']
    """
    return [ds.names[i] for i in sorted(ds.threat_ids)]


# ---------------------------------------------------------------------------------------------- labels


@dataclass
class RemappedLabels:
    text: str
    old_ids: list[int]
    new_ids: list[int]
    wh: np.ndarray  # (N, 2) normalised box sizes


def remap_label_text(text: str, id_map: Sequence[int], path: Path | str = "") -> RemappedLabels:
    """Rewrite each line's class id through ``id_map``, keeping the coordinates' text unchanged.

    A line that does not parse or whose id is outside ``id_map`` raises :class:`DatasetError` naming the file
    and line.

    Example:
        >>> remap_label_text("1 0.5 0.5 0.1 0.2\\n", [3, 0]).text
        '0 0.5 0.5 0.1 0.2\\n'
    """
    lines: list[str] = []
    old_ids: list[int] = []
    wh: list[tuple[float, float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = parse_label_line(line, path, number)
        except DatasetError:
            raise
        except (ValueError, OverflowError) as err:
            raise DatasetError(f"not a number in {line.strip()!r}", path, number) from err
        old = int(row[0])
        if old >= len(id_map):
            raise DatasetError(
                f"class id {old} but the source's names has {len(id_map)} classes; run `xraydet data check`",
                path,
                number,
            )
        lines.append(" ".join([str(id_map[old]), *line.split()[1:]]))
        old_ids.append(old)
        wh.append((float(row[3]), float(row[4])))
    return RemappedLabels(
        text="".join(f"{line}\n" for line in lines),
        old_ids=old_ids,
        new_ids=[id_map[i] for i in old_ids],
        wh=np.array(wh, dtype=np.float64).reshape(-1, 2),
    )


# ---------------------------------------------------------------------------------------------- planning


@dataclass
class _Entry:
    """One source image as read in planning: where it goes, its remapped labels and its content digest."""

    source: int
    split: str  # the source's split name
    target: str  # the merged split
    image: Path
    labels: RemappedLabels | None  # None: no label file
    digest: str


def split_rank(split: str) -> tuple[int, str]:
    """Sort key of merged splits: train, val, test, then any other split by name."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def find_duplicates(
    entries: Sequence[tuple[str, Path, str, str]], keep_leaks: bool = False
) -> tuple[set[int], list[DuplicateImage]]:
    """Identical images among ``(merged split, image, digest, label text)`` entries: the indices to drop, and
    every copy.

    The first copy (by split rank, then entry order) is kept; a copy in another split is a leak and dropped
    unless ``keep_leaks``; a copy in the same split as the first is kept. Copies whose labels differ (two data
    sets that labelled different classes on one scan) are marked ``labels_differ``.

    Example:
        >>> entries = [("val", Path("b/v.png"), "x", "1 0.5 0.5 0.2 0.2"), ("train", Path("t.png"), "x", "")]
        >>> dropped, found = find_duplicates(entries)
        >>> dropped, [(d.kind, d.kept, d.duplicate, d.labels_differ) for d in found]
        ({0}, [('split-leak', 't.png', 'b/v.png', True)])
    """
    dropped: set[int] = set()
    found: list[DuplicateImage] = []
    for members in group_by_content([digest for _, _, digest, _ in entries]):
        first, *others = sorted(members, key=lambda i: (split_rank(entries[i][0]), i))
        home, original, _, kept_labels = entries[first]
        for i in others:
            split, image, _, labels = entries[i]
            leak = split != home
            if leak and not keep_leaks:
                dropped.add(i)
            found.append(
                DuplicateImage(
                    kind="split-leak" if leak else "duplicate-image",
                    kept=str(original),
                    kept_split=home,
                    duplicate=str(image),
                    duplicate_split=split,
                    dropped=leak and not keep_leaks,
                    labels_differ=label_set(labels) != label_set(kept_labels),
                )
            )
    return dropped, found


def label_set(text: str) -> list[str]:
    """A label file's boxes as sorted, whitespace-normalised lines: equal for the same boxes in any order.

    Example:
        >>> label_set("1 0.5 0.5 0.2 0.2\\n0  0.1 0.1 0.1 0.1\\n")
        ['0 0.1 0.1 0.1 0.1', '1 0.5 0.5 0.2 0.2']
    """
    return sorted(" ".join(line.split()) for line in text.splitlines() if line.strip())


def refuse_emptied_splits(entries: Sequence[tuple[str, Path, str, str]], dropped: set[int]) -> None:
    """Refuse a merge whose dropped leaks would leave a split with no image at all (every val image also in
    train, say): the merged set would silently have no validation split."""
    before = {e[0] for e in entries}
    after = {e[0] for i, e in enumerate(entries) if i not in dropped}
    for split in sorted(before - after, key=split_rank):
        n = sum(e[0] == split for e in entries)
        raise ConfigError(
            f"every {split} image ({n}) is also in an earlier split: the merged set would have no {split} "
            "split; give the sources distinct images, or pass --keep-leaks to keep the copies (a leak)"
        )


def warn_duplicates(found: Sequence[DuplicateImage]) -> None:
    """Log each leak (and each copy within a split) naming both files; past :data:`WARN_DUPLICATES`, count."""
    for d in found[:WARN_DUPLICATES]:
        if d.kind == "split-leak":
            what = (
                f"dropped the {d.duplicate_split} copy"
                if d.dropped
                else f"kept in both (leak into {d.duplicate_split})"
            )
            if d.labels_differ:
                what += (
                    "; their labels differ, so the dropped copy's boxes are lost"
                    if d.dropped
                    else "; their labels differ"
                )
            log.warning(
                "same image in %s (%s) and %s (%s): %s",
                d.kept,
                d.kept_split,
                d.duplicate,
                d.duplicate_split,
                what,
            )
        else:
            differ = ", labels differ" if d.labels_differ else ""
            log.warning(
                "same image twice in %s: %s and %s (both kept%s)",
                d.duplicate_split,
                d.kept,
                d.duplicate,
                differ,
            )
    if len(found) > WARN_DUPLICATES:
        log.warning("... and %d more identical image(s), listed in merge.json", len(found) - WARN_DUPLICATES)


@dataclass
class _FilePlan:
    split: str
    image: Path
    dest_name: str
    label_text: str | None  # None: the source image has no label file


def source_names(datasets: Sequence[Dataset]) -> list[str]:
    """A short unique name per source (its folder name), used for collision prefixes and map files.

    Example:
        >>> from xraydet.data.dataset import Dataset
        >>> source_names([Dataset(Path("/d/opixray"), [], {}, [], Path("/d/opixray/data.yaml"))] * 2)
        ['opixray', 'opixray-2']
    """
    result: list[str] = []
    for ds in datasets:
        base = (ds.yaml_path.parent if ds.yaml_path else ds.root).name or "source"
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base)
        name, i = base, 2
        while name in result:
            name, i = f"{base}-{i}", i + 1
        result.append(name)
    return result


def refuse_repeated_sources(datasets: Sequence[Dataset]) -> None:
    """Refuse a data set given twice (as its folder and as its data.yaml, say): each image would be merged
    twice, the second copy renamed, so duplicates would fill the merged set unnoticed."""
    seen: dict[Path, int] = {}
    for i, ds in enumerate(datasets):
        key = (ds.yaml_path or ds.root).resolve()
        if key in seen:
            raise ConfigError(f"sources {seen[key] + 1} and {i + 1} are the same data set ({key})")
        seen[key] = i


def rename_steps(
    source: str, map_global: dict[str, str], per_source: dict[str, dict[str, str]], cli: dict[str, str]
) -> list[dict[str, str]]:
    """The renames applied to one source, in order: its map-file section, the map file's ``rename:``, CLI."""
    return [per_source.get(source, {}), map_global, cli]


def apply_steps(names: Sequence[str], steps: Sequence[dict[str, str]], case_insensitive: bool) -> list[str]:
    """Apply rename steps one after the other (``pistol -> Gun`` then ``Gun -> firearm`` chains).

    Example:
        >>> apply_steps(["pistol", "Gun"], [{"pistol": "Gun"}, {"Gun": "firearm"}], False)
        ['firearm', 'firearm']
    """
    result = list(names)
    for step in steps:
        result = rename_classes(result, step, case_insensitive)
    return result


def _check_renames_used(
    datasets: Sequence[Dataset],
    sources: Sequence[str],
    map_global: dict[str, str],
    per_source: dict[str, dict[str, str]],
    cli: dict[str, str],
    case_insensitive: bool,
) -> None:
    """Refuse renames that match no class (a typo would otherwise silently leave two classes apart)."""
    unknown_sources = set(per_source) - set(sources)
    if unknown_sources:
        raise ConfigError(
            f"map file names unknown source(s) {sorted(unknown_sources)}; sources are {list(sources)}"
        )
    used: list[set[str]] = [set(), set(), set()]
    for ds, src in zip(datasets, sources, strict=True):
        names = list(ds.names)
        for i, step in enumerate(rename_steps(src, map_global, per_source, cli)):
            present = {_key(n, case_insensitive) for n in names}
            used[i] |= {old for old in step if _key(old, case_insensitive) in present}
            names = rename_classes(names, step, case_insensitive)
    unused = [f"{src}:{old}" for src, table in per_source.items() for old in table if old not in used[0]]
    unused += [old for old in map_global if old not in used[1]] + [old for old in cli if old not in used[2]]
    if unused:
        known = sorted({n for ds in datasets for n in ds.names})
        raise ConfigError(f"rename of unknown class(es) {unused}; the sources' classes are {known}")


def merge_datasets(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    renames: dict[str, str] | None = None,
    map_file: str | Path | None = None,
    case_insensitive: bool = False,
    dry_run: bool = False,
    link: bool = False,
    overwrite: bool = False,
    keep_leaks: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MergeResult:
    """Merge YOLO data sets into ``out`` (atomically); return what was (with ``dry_run``: would be) done.

    Args:
        sources: data.yaml files or folders, in order; the first source's classes come first.
        out: output folder; it must not exist unless ``overwrite``.
        renames: ``{old: new}`` applied to every source before the union (after ``map_file``'s renames).
        map_file: YAML with ``rename:`` and ``sources: {name: {old: new}}``.
        case_insensitive: ``Knife`` and ``knife`` are one class.
        dry_run: plan and count, write nothing.
        link: hard-link (or symlink) images instead of copying them.
        keep_leaks: keep the val/test copy of an image that is also in train (or a test copy of a val image);
            by default it is dropped, so the merged set has no train/val leak. Either way it is warned about
            and listed in ``duplicates``.

    Raises:
        DatasetError: a source or a label line that cannot be read (nothing is written).
        ConfigError: a rename of a class no source has, or a bad map file.

    Example:
        >>> r = merge_datasets(["opixray/data.yaml", "synth/data.yaml"], "merged")  # doctest: +SKIP
        >>> r.names  # doctest: +SKIP
        ['Scissor', 'Folding_Knife', ..., 'knife', 'scissors', 'gun', 'bottle']
    """
    if not sources:
        raise ConfigError("merge needs at least one source")
    out = Path(out)
    if out.exists() and not overwrite and not dry_run:
        raise XrayDetError(f"{out} already exists; pass --overwrite to replace it")
    datasets = [load_dataset(s) for s in sources]
    refuse_repeated_sources(datasets)
    listings = [ds.listing() for ds in datasets]  # one walk of each source: for the output check and the work
    refuse_output_over_inputs(out, [place for listing in listings for place in listing.locations])
    for ds in datasets:
        if dupes := duplicate_names(ds.names):
            raise DatasetError(
                f"class names repeat: {'; '.join(dupes)}; merge unites classes by name, so give each class "
                "its own name in data.yaml first",
                ds.yaml_path or ds.root,
            )
    names_of = source_names(datasets)
    map_global, per_source = load_map_file(map_file) if map_file else ({}, {})
    cli = dict(renames or {})
    _check_renames_used(datasets, names_of, map_global, per_source, cli, case_insensitive)
    steps = [rename_steps(n, map_global, per_source, cli) for n in names_of]
    renamed = [apply_steps(ds.names, st, case_insensitive) for ds, st in zip(datasets, steps, strict=True)]
    merged, id_maps = unify_names(renamed, case_insensitive)
    renamed_threats = [
        apply_steps(threat_classes(ds), st, case_insensitive) for ds, st in zip(datasets, steps, strict=True)
    ]
    threats = unify_threats(renamed_threats, merged, case_insensitive)

    split_maps = [{s: SPLIT_ALIASES.get(s.lower(), s) for s in ds.splits} for ds in datasets]
    entries = _read_entries(listings, split_maps, id_maps)
    keyed = [(e.target, e.image, e.digest, e.labels.text if e.labels else "") for e in entries]
    dropped, duplicates = find_duplicates(keyed, keep_leaks)
    refuse_emptied_splits(keyed, dropped)
    warn_duplicates(duplicates)

    merged_stats = StatsBuilder(merged)
    own_stats = [StatsBuilder(ds.names) for ds in datasets]
    taken: dict[str, set[str]] = {}
    plans: list[_FilePlan] = []
    n_renamed = [0] * len(datasets)
    n_dropped = [0] * len(datasets)
    for i, e in enumerate(entries):
        old_ids, new_ids, wh = (
            (e.labels.old_ids, e.labels.new_ids, e.labels.wh) if e.labels else ([], [], None)
        )
        own_stats[e.source].add(e.split, old_ids, np.zeros((0, 2)) if wh is None else wh)
        if i in dropped:
            n_dropped[e.source] += 1
            continue
        dest = unique_name(e.image, names_of[e.source], taken.setdefault(e.target, set()))
        n_renamed[e.source] += dest != e.image.name
        plans.append(_FilePlan(e.target, e.image, dest, e.labels.text if e.labels else None))
        merged_stats.add(e.target, new_ids, np.zeros((0, 2)) if wh is None else wh)
    summaries = [
        SourceSummary(
            name=name,
            path=str(ds.yaml_path or ds.root),
            names=ds.names,
            class_map=dict(zip(ds.names, [merged[i] for i in id_map], strict=True)),
            id_map=id_map,
            split_map=split_maps[k],
            renamed_files=n_renamed[k],
            dropped_files=n_dropped[k],
            stats=own_stats[k].finish(),
        )
        for k, (ds, name, id_map) in enumerate(zip(datasets, names_of, id_maps, strict=True))
    ]
    leaks = [d for d in duplicates if d.kind == "split-leak"]
    result = MergeResult(
        out=out,
        dry_run=dry_run,
        names=merged,
        threats=threats,
        sources=summaries,
        stats=merged_stats.finish(),
        renamed_files=sum(n_renamed),
        keep_leaks=keep_leaks,
        leaks_dropped=sum(d.dropped for d in leaks),
        leaks_kept=sum(not d.dropped for d in leaks),
        duplicates_in_split=len(duplicates) - len(leaks),
        duplicates=duplicates,
    )
    if dry_run:
        return result
    _write(out, plans, result, link, overwrite, progress)
    return result


def _read_entries(
    listings: Sequence[DatasetListing],
    split_maps: Sequence[dict[str, str]],
    id_maps: Sequence[Sequence[int]],
) -> list[_Entry]:
    """Every listed image of every source, in source then split order, with its remapped labels and digest."""
    entries: list[_Entry] = []
    for k, (listing, split_map, id_map) in enumerate(zip(listings, split_maps, id_maps, strict=True)):
        for split, target in split_map.items():
            for image in listing.images[split]:
                label = label_path_for(image)
                remapped = remap_label_text(_read_text(label), id_map, label) if label.exists() else None
                entries.append(_Entry(k, split, target, image, remapped, content_digest(image)))
    return entries


def _read_text(label: Path) -> str:
    """A label file's text (a UTF-8 BOM is dropped); bytes that are not UTF-8 raise naming file and line."""
    try:
        return read_text_file(label, "utf-8-sig")
    except OSError as err:
        raise DatasetError(f"cannot read the label file ({err})", label) from err


def _write(
    out: Path,
    plans: Sequence[_FilePlan],
    result: MergeResult,
    link: bool,
    overwrite: bool,
    progress: Callable[[int], None] | None,
) -> None:
    splits = sorted({p.split for p in plans}, key=split_rank)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for split in splits:
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
        for plan in plans:
            place_file(plan.image, tmp / "images" / plan.split / plan.dest_name, link)
            if plan.label_text is not None:
                label = tmp / "labels" / plan.split / f"{Path(plan.dest_name).stem}.txt"
                label.write_text(plan.label_text, encoding="utf-8")
            if progress:
                progress(1)
        write_data_yaml(tmp, result.names, {s: f"images/{s}" for s in splits}, result.threats)
        body = result.model_dump(mode="json", exclude={"out", "dry_run"})
        body["files"] = [
            {"split": p.split, "image": f"images/{p.split}/{p.dest_name}", "source": str(p.image)}
            for p in plans
        ]
        atomic_write_text(tmp / "merge.json", json.dumps(body, indent=1) + "\n")
    log.info("merged %d images into %s", len(plans), out)
