"""Per-class and per-split counts and box-size distributions of a YOLO data set.

The counting is pure (:class:`StatsBuilder` is fed one image at a time), so ``check``, ``merge`` and ``split``
share it with ``stats``; :func:`dataset_stats` is the version that reads a data set from disk and
:func:`plot_stats` draws the bar chart and box-size histogram a person looks at.

Box sizes follow COCO: *small* below 32x32 px of area, *medium* below 96x96 px, *large* above; pixel areas
need the image size, so boxes of images whose size is unknown only count in the relative-area figures.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from xraydet.data.dataset import DatasetError, label_path_for, load_dataset, read_label_file
from xraydet.ultralytics_env import pil_open

log = logging.getLogger(__name__)

SMALL_AREA_PX = 32**2
MEDIUM_AREA_PX = 96**2
# log10 of the relative box area (box area / image area): bins from 1e-5 to 1.
REL_AREA_BIN_EDGES = [round(-5 + 0.25 * i, 2) for i in range(21)]
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class SplitStats(BaseModel):
    """Counts of one split; lists are indexed by class id."""

    images: int = 0
    background: int = 0
    instances: list[int] = Field(default_factory=list)
    images_per_class: list[int] = Field(default_factory=list)

    @property
    def n_instances(self) -> int:
        return sum(self.instances)


class BoxSizeStats(BaseModel):
    """Box-size distribution. ``small/medium/large`` count boxes by COCO pixel area."""

    boxes: int = 0
    small: int = 0
    medium: int = 0
    large: int = 0
    unknown_px: int = 0
    rel_area_quantiles: dict[str, float] = Field(default_factory=dict)
    rel_area_hist_log10_edges: list[float] = Field(default_factory=lambda: list(REL_AREA_BIN_EDGES))
    rel_area_hist: list[int] = Field(default_factory=list)

    @property
    def small_share(self) -> float | None:
        sized = self.small + self.medium + self.large
        return self.small / sized if sized else None


class DatasetStats(BaseModel):
    """What a data set holds: images and instances per split and class; box sizes overall and per class."""

    names: list[str]
    splits: dict[str, SplitStats]
    box_sizes: BoxSizeStats
    class_box_sizes: list[BoxSizeStats] = Field(default_factory=list)

    @property
    def n_images(self) -> int:
        return sum(s.images for s in self.splits.values())

    @property
    def n_instances(self) -> int:
        return sum(s.n_instances for s in self.splits.values())

    def instances_per_class(self) -> list[int]:
        """Instances of each class summed over all splits."""
        totals = [0] * len(self.names)
        for split in self.splits.values():
            for i, n in enumerate(split.instances):
                totals[i] += n
        return totals

    def images_per_class(self) -> list[int]:
        totals = [0] * len(self.names)
        for split in self.splits.values():
            for i, n in enumerate(split.images_per_class):
                totals[i] += n
        return totals


def imbalance(counts: Sequence[int]) -> tuple[float | None, int | None, int | None]:
    """``(rarest / commonest, rarest id, commonest id)`` over the classes; ``(None, None, None)`` if all zero.

    Example:
        >>> imbalance([100, 5, 40])
        (0.05, 1, 0)
    """
    if not counts or max(counts) == 0:
        return None, None, None
    rare = min(range(len(counts)), key=lambda i: (counts[i], i))
    common = max(range(len(counts)), key=lambda i: (counts[i], -i))
    return counts[rare] / counts[common], rare, common


class StatsBuilder:
    """Accumulates :class:`DatasetStats` one image at a time.

    Example:
        >>> b = StatsBuilder(["knife", "gun"])
        >>> b.add("train", [0, 0, 1], np.array([[0.1, 0.1]] * 3), 416, 416)
        >>> b.add("val", [], np.zeros((0, 2)), 416, 416)
        >>> s = b.finish()
        >>> s.splits["train"].instances, s.splits["val"].background, s.box_sizes.medium
        ([2, 1], 1, 3)
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._splits: dict[str, SplitStats] = {}
        self._rel_areas: list[float] = []
        self._classes: list[int] = []
        self._px_areas: list[float] = []  # NaN where the image size is unknown

    def touch(self, split: str) -> SplitStats:
        """Make ``split`` appear in the result even if no image is added to it."""
        nc = len(self.names)
        return self._splits.setdefault(split, SplitStats(instances=[0] * nc, images_per_class=[0] * nc))

    def add(
        self,
        split: str,
        class_ids: Sequence[int] | np.ndarray,
        wh: np.ndarray,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        """Count one image: its class ids and normalised ``(w, h)``; ids outside ``names`` are ignored."""
        nc = len(self.names)
        stats = self.touch(split)
        stats.images += 1
        ids = [int(c) for c in class_ids]
        wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
        keep = [i for i, c in enumerate(ids) if 0 <= c < nc]
        if not keep:
            stats.background += 1 if not ids else 0
            return
        for c in (ids[i] for i in keep):
            stats.instances[c] += 1
        for c in {ids[i] for i in keep}:
            stats.images_per_class[c] += 1
        rel = wh[keep, 0] * wh[keep, 1]
        self._rel_areas.extend(rel.tolist())
        self._classes.extend(ids[i] for i in keep)
        px = rel * width * height if width and height else np.full(len(keep), math.nan)
        self._px_areas.extend(px.tolist())

    def finish(self) -> DatasetStats:
        rel = np.asarray(self._rel_areas, dtype=np.float64)
        px = np.asarray(self._px_areas, dtype=np.float64)
        cls = np.asarray(self._classes, dtype=np.int64)
        per_class = [box_size_stats(rel[cls == c], px[cls == c]) for c in range(len(self.names))]
        return DatasetStats(
            names=self.names,
            splits=dict(self._splits),
            box_sizes=box_size_stats(rel, px),
            class_box_sizes=per_class,
        )


def box_size_stats(rel_area: np.ndarray, px_area: np.ndarray) -> BoxSizeStats:
    """Bucket boxes by COCO pixel area (NaN = unknown) and summarise their relative areas.

    Example:
        >>> s = box_size_stats(np.array([0.001, 0.5]), np.array([100.0, 50000.0]))
        >>> s.small, s.large, s.rel_area_quantiles["p50"]
        (1, 1, 0.2505)
    """
    known = px_area[~np.isnan(px_area)]
    positive = np.clip(rel_area, 1e-12, None)
    hist, _ = np.histogram(np.clip(np.log10(positive), -5, 0), bins=REL_AREA_BIN_EDGES)
    quantiles = (
        {f"p{round(q * 100):02d}": float(np.quantile(rel_area, q)) for q in QUANTILES}
        if len(rel_area)
        else {}
    )
    return BoxSizeStats(
        boxes=len(rel_area),
        small=int((known < SMALL_AREA_PX).sum()),
        medium=int(((known >= SMALL_AREA_PX) & (known < MEDIUM_AREA_PX)).sum()),
        large=int((known >= MEDIUM_AREA_PX).sum()),
        unknown_px=int(len(px_area) - len(known)),
        rel_area_quantiles=quantiles,
        rel_area_hist=hist.astype(int).tolist(),
    )


def _image_size(path: Path) -> tuple[int, int] | None:

    try:
        with pil_open(path) as im:
            return im.size
    except Exception:  # an unreadable image is check's business; stats just lacks its size
        return None


def _label_rows(label: Path) -> np.ndarray:
    if not label.exists():
        return np.zeros((0, 5))
    try:
        return read_label_file(label)
    except (DatasetError, ValueError, OverflowError) as err:
        log.warning("skipping unreadable label file %s (%s); run `xraydet data check`", label, err)
        return np.zeros((0, 5))


def dataset_stats(source: str | Path, splits: Iterable[str] | None = None, workers: int = 4) -> DatasetStats:
    """Read a data set (data.yaml or folder) and count it; malformed label files are skipped with a warning.

    Example:
        >>> s = dataset_stats("../shared/data/opixray/data.yaml")  # doctest: +SKIP
        >>> s.n_images, s.instances_per_class()  # doctest: +SKIP
        (2350, [...])
    """
    ds = load_dataset(source)
    builder = StatsBuilder(ds.names)

    def one(image: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
        return _label_rows(label_path_for(image)), _image_size(image)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for split in splits or list(ds.splits):
            images = ds.images(split)
            for rows, size in pool.map(one, images, chunksize=64):
                w, h = size if size else (None, None)
                builder.add(split, rows[:, 0].astype(int), rows[:, 3:5], w, h)
    return builder.finish()


def plot_stats(stats: DatasetStats, out: str | Path, title: str = "") -> Path:
    """Write a PNG: instances per class and split (bars) and the relative box-area histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xraydet.io import atomic_write_bytes

    fig, (ax_bar, ax_hist) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    n = len(stats.names)
    x = np.arange(n)
    width = 0.8 / max(1, len(stats.splits))
    for i, (split, s) in enumerate(stats.splits.items()):
        ax_bar.bar(x + i * width - 0.4 + width / 2, s.instances or [0] * n, width, label=split)
    ax_bar.set_xticks(x, stats.names, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax_bar.set_ylabel("instances")
    ax_bar.set_title("Instances per class and split")
    ax_bar.legend()
    edges = stats.box_sizes.rel_area_hist_log10_edges
    hist = stats.box_sizes.rel_area_hist
    ax_hist.bar(edges[:-1], hist, width=np.diff(edges), align="edge", edgecolor="black")
    ax_hist.set_xlabel("log10(box area / image area)")
    ax_hist.set_ylabel("boxes")
    share = stats.box_sizes.small_share
    extra = "" if share is None else f", {share:.0%} COCO-small (<32² px)"
    ax_hist.set_title(f"Box sizes ({stats.box_sizes.boxes} boxes{extra})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())
