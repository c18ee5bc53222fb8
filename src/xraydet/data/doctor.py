"""Does each box sit on an object? Label-content scores, contact sheets and an overfit probe.

X-ray objects absorb: the scan is darker (more attenuation ``-log(I/I0)``) and more structured where an object
lies. A label set whose boxes sit on their objects therefore scores higher than the *same* boxes moved off
them. :func:`doctor` measures that on a sample of images by scoring the given boxes against perturbed copies:

* ``transposed`` (x and y swapped in normalised coordinates: the loc-token x/y mix-up),
* ``shift_{left,right,up,down}`` (moved by half the box size),
* ``scale_2x`` and ``scale_0.5x`` (rescaled about the box centre),
* ``rebinned_1000`` (every normalised coordinate times 1000/1024: undoes loc tokens of 1024 bins read over
  1000, which makes boxes 2.4% larger and moves them away from the top-left corner, by up to 2.4% of the
  image at the far corner).

Three scores: one judges position, two judge size.

* **contrast** (position): mean attenuation and edge density inside the box minus those of a ring around it
  (the box grown by half its size on each side), each divided by the image's standard deviation. A box on an
  object beats the same box moved aside.
* **fit** (size): the F1 of the box against the image's *foreground*, the pixels whose attenuation stands out
  from a local average (a box blur over a tenth of the image). Precision is the foreground share of the box,
  recall the share of the foreground near the given box (grown by its own size on each side) that it covers.
  Contrast alone cannot judge size: a box half the size on a dense object has an even higher contrast.
* **extent** (size): the F2 of the box against the bounding box of the *dark objects at its centre*: the
  8-connected groups of the image's darkest ``DARK_SHARE`` of pixels (threats are metal: the darkest thing in
  a bag) that reach into the box's centre (the box scaled by ``EXTENT_SEED``). F2 weighs a missed part of the
  object 4x an empty margin, since labels are drawn loose around the dark core. On cluttered real scans fit
  rewards a box twice the size (it takes in more foreground); extent does not, because the dark object at
  its centre stays the same size. The dark threshold is relative to each image, so it adapts to the scanner.

Each perturbation is judged on the per-box differences of each of its family's scores (perturbed minus given)
with a paired t statistic. It is **flagged** when a score prefers it with ``t >= T_DECIDE``, **ok** when no
score leans towards it (``t <= 0``) and one prefers the given labels with ``t <= -T_DECIDE``, and
**inconclusive** otherwise: the scores cannot tell or disagree, and the report says so instead of guessing.
On the first 150 OPIXray val scans that is box size against a 2x larger box: extent prefers the given box
clearly (t -8.8) but fit leans the other way (t +0.9), and the contact sheets are then the check.
Flagged perturbations make the labels look transposed, shifted, rebinned or mis-scaled. A box twice the size
also covers an object its label missed by half a box, so shifted labels usually flag ``scale_2x`` too: read
the position faults first.

``rebinned_1000`` is judged like a size perturbation, by fit and extent. On the 416-px OPIXray val scans it
moves a box by 7 px (median; 11 at most) and changes its width and height by about 1 px: mostly a move, but
one that leaves a loose label around its object, so contrast (inside against the ring) hardly changes, while
fit and extent, which measure the box against the object, see it. Its limits: it moves boxes up and left, so
labels shifted down or right (by half a box, or by a few pixels) flag it too; and it shrinks them by 2.4%, so
labels much too large can flag it besides ``scale_0.5x``. Read the other faults first; on a set flagged
``rebinned`` alone, look at the contact sheets: a shift offsets every box by the same amount, a rebinning by
an amount that grows towards the bottom-right corner.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageOps
from pydantic import BaseModel, Field

from xraydet.data.dataset import Dataset, label_path_for, load_dataset, read_label_file, write_data_yaml
from xraydet.errors import ConfigError
from xraydet.io import atomic_directory, atomic_write_json, check_output_dir
from xraydet.structures import xywhn_to_xyxy
from xraydet.ultralytics_env import pil_open

log = logging.getLogger(__name__)

DOCTOR_JSON = "doctor.json"

Family = Literal["position", "size"]
Score = Literal["contrast", "fit", "extent"]
FAMILY_SCORES: dict[Family, tuple[Score, ...]] = {"position": ("contrast",), "size": ("fit", "extent")}


def _zeros(r: np.ndarray) -> np.ndarray:
    return np.zeros(len(r))


# Perturbations of normalised (cx, cy, w, h) rows: name -> (family, function).
PERTURBATIONS: dict[str, tuple[Family, Callable[[np.ndarray], np.ndarray]]] = {
    "transposed": ("position", lambda r: r[:, [1, 0, 3, 2]]),
    "shift_left": ("position", lambda r: r - np.c_[r[:, 2] / 2, _zeros(r), _zeros(r), _zeros(r)]),
    "shift_right": ("position", lambda r: r + np.c_[r[:, 2] / 2, _zeros(r), _zeros(r), _zeros(r)]),
    "shift_up": ("position", lambda r: r - np.c_[_zeros(r), r[:, 3] / 2, _zeros(r), _zeros(r)]),
    "shift_down": ("position", lambda r: r + np.c_[_zeros(r), r[:, 3] / 2, _zeros(r), _zeros(r)]),
    "scale_2x": ("size", lambda r: r * [1, 1, 2, 2]),
    "scale_0.5x": ("size", lambda r: r * [1, 1, 0.5, 0.5]),
    # Undoes a loc-token set of 1024 bins converted over 1000 (every coordinate 1024/1000 too large).
    # Judged by fit and extent, which measure the box against the object: contrast barely moves when a loose
    # box moves a few pixels, and missed it on OPIXray samples of 150 boxes (docs/benchmarks/doctor.md).
    "rebinned_1000": ("size", lambda r: r * (1000 / 1024)),
}


T_CAP = 1e6  # |t| stored at most this: all per-box differences equal gives an infinite t
T_DECIDE = 2.5  # |paired t| needed to call a perturbation better (flagged) or worse (ok) than the given
DARK_SHARE = 0.01  # extent: the darkest share of an image's pixels that can be a (metal) object
EXTENT_BETA = 2.0  # extent's F-beta: a missed part of the object counts beta**2 times an empty margin
EXTENT_SEED = 0.3  # extent: dark objects count when they reach into the box scaled by this about its centre


class PerturbationScore(BaseModel):
    name: str
    family: Family
    contrast: float
    fit: float
    extent: float = 0.0
    win_rate: float  # share of boxes where the given label beats this perturbation on the deciding score
    # paired t of (perturbed - given) deciding scores over the boxes: > 0, it scores higher
    t_stat: float = 0.0
    # the t of each of the family's scores, and the one that decides (see _decide)
    t_by_score: dict[str, float] = Field(default_factory=dict)
    decided_by: str = "contrast"
    decision: Literal["ok", "flagged", "inconclusive"] = "ok"

    @property
    def flagged(self) -> bool:
        return self.decision == "flagged"


class ProbeResult(BaseModel):
    images: int
    epochs: int
    imgsz: int
    map50: list[float]
    climbed: bool
    verdict: str


class DoctorReport(BaseModel):
    """Scores of the given labels and of each perturbation, with a verdict (``pass`` or ``flagged``;
    ``no-labels`` when the sample holds no box). ``unreadable`` lists sampled images that could not be opened
    (skipped)."""

    dataset: str
    split: str
    names: list[str]
    n_images: int
    n_boxes: int
    given_contrast: float
    given_fit: float
    given_extent: float = 0.0
    perturbations: list[PerturbationScore]
    verdict: Literal["pass", "flagged", "no-labels"]
    faults: list[str]
    inconclusive: list[str] = []  # perturbations the scores could not tell from the given labels
    unreadable: list[str] = []  # sampled images PIL could not open: skipped, not scored
    contact_sheets: list[str] = []
    plot: str | None = None
    probe: ProbeResult | None = None

    @property
    def flagged(self) -> bool:
        return self.verdict == "flagged" or (self.probe is not None and not self.probe.climbed)


# ------------------------------------------------------------------------------------------ image maps
def _integral(a: np.ndarray) -> np.ndarray:
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    s[1:, 1:] = a.cumsum(0).cumsum(1)
    return s


def _box_blur(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over a ``k x k`` window (clipped at the borders), via an integral image."""
    s = _integral(a)
    h, w = a.shape
    r = k // 2
    ys, xs = np.arange(h), np.arange(w)
    y1, y2 = np.clip(ys - r, 0, h), np.clip(ys + r + 1, 0, h)
    x1, x2 = np.clip(xs - r, 0, w), np.clip(xs + r + 1, 0, w)
    total = s[y2][:, x2] - s[y1][:, x2] - s[y2][:, x1] + s[y1][:, x1]
    return total / ((y2 - y1)[:, None] * (x2 - x1)[None, :])


def _dark_objects(att: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected groups of the ``DARK_SHARE`` most attenuating pixels: a label image (0 = none) and each
    group's bounding box ``(x1, y1, x2, y2)``, row ``i - 1`` for label ``i``."""
    dark = (att >= np.quantile(att, 1 - DARK_SHARE)) & (att > att.min())  # a flat image has no dark object
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
    x, y, w, h = (stats[1:, i].astype(np.float64) for i in range(4))
    return labels, np.stack([x, y, x + w, y + h], axis=1)


class ImageMaps:
    """Integral images of attenuation, edge density and foreground for O(1) box statistics, and the image's
    dark objects (see :func:`_dark_objects`)."""

    def __init__(self, rgb: np.ndarray) -> None:
        grey = np.asarray(rgb, dtype=np.float64).mean(axis=2) / 255.0 if rgb.ndim == 3 else rgb / 255.0
        self.height, self.width = grey.shape
        att = -np.log(np.clip(grey, 1 / 255, 1.0))
        edge = np.zeros_like(grey)
        edge[:, 1:] += np.abs(np.diff(grey, axis=1))
        edge[1:, :] += np.abs(np.diff(grey, axis=0))
        local = _box_blur(att, max(3, int(0.1 * max(self.width, self.height))) | 1)
        foreground = (att - local > att.std()).astype(np.float64)
        self.att, self.edge, self.fg = _integral(att), _integral(edge), _integral(foreground)
        self.att_sd, self.edge_sd = att.std() + 1e-6, edge.std() + 1e-6
        self.dark_labels, self.dark_boxes = _dark_objects(att)

    def box_sum(self, table: np.ndarray, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sums and pixel counts of ``table``'s map over boxes (rounded outward, clipped to the image)."""
        b = np.stack(
            [np.floor(xyxy[:, 0]), np.floor(xyxy[:, 1]), np.ceil(xyxy[:, 2]), np.ceil(xyxy[:, 3])], 1
        )
        b = np.clip(b, 0, [self.width, self.height, self.width, self.height]).astype(int)
        x1, y1, x2, y2 = b.T
        area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        total = table[y2, x2] - table[y1, x2] - table[y2, x1] + table[y1, x1]
        return np.where(area > 0, total, 0.0), area


def _grow(xyxy: np.ndarray, f: float) -> np.ndarray:
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    return xyxy + np.c_[-w * f, -h * f, w * f, h * f]


def contrast_score(maps: ImageMaps, xyxy: np.ndarray) -> np.ndarray:
    """Attenuation + edge contrast of each box against the ring around it (0 for a box off the image)."""
    score = np.zeros(len(xyxy))
    outer = _grow(xyxy, 0.5)
    for table, sd in ((maps.att, maps.att_sd), (maps.edge, maps.edge_sd)):
        s_in, a_in = maps.box_sum(table, xyxy)
        s_out, a_out = maps.box_sum(table, outer)
        ring = a_out - a_in
        valid = (a_in > 0) & (ring > 0)
        inside = s_in / np.maximum(a_in, 1)
        around = (s_out - s_in) / np.maximum(ring, 1)
        score += np.where(valid, (inside - around) / sd, 0.0)
    return score


def fit_score(maps: ImageMaps, xyxy: np.ndarray, given: np.ndarray) -> np.ndarray:
    """F1 of each box against the foreground near the corresponding given box."""
    fg_in, area = maps.box_sum(maps.fg, xyxy)
    near = _grow(given, 1.0)
    union = np.c_[np.minimum(near[:, :2], xyxy[:, :2]), np.maximum(near[:, 2:], xyxy[:, 2:])]
    fg_near, _ = maps.box_sum(maps.fg, union)
    precision = fg_in / np.maximum(area, 1)
    recall = fg_in / np.maximum(fg_near, 1e-9)
    return np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-9), 0.0
    )


def _dark_extent(maps: ImageMaps, box: np.ndarray) -> np.ndarray | None:
    """Bounding box of the dark objects reaching into the centre of ``box`` (the box scaled by
    ``EXTENT_SEED``), or None where there are none."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    qw, qh = EXTENT_SEED * (box[2] - box[0]) / 2, EXTENT_SEED * (box[3] - box[1]) / 2
    x1, x2 = (int(np.clip(v, 0, maps.width)) for v in (np.floor(cx - qw), np.ceil(cx + qw)))
    y1, y2 = (int(np.clip(v, 0, maps.height)) for v in (np.floor(cy - qh), np.ceil(cy + qh)))
    ids = np.unique(maps.dark_labels[y1:y2, x1:x2])
    ids = ids[ids > 0]
    if len(ids) == 0:
        return None
    found = maps.dark_boxes[ids - 1]
    return np.r_[found[:, :2].min(0), found[:, 2:].max(0)]


def extent_score(maps: ImageMaps, xyxy: np.ndarray, beta: float = EXTENT_BETA) -> np.ndarray:
    """F-beta of each box (clipped to the image) against the bounding box of the dark objects at its centre
    (0 where there are none): recall is the share of that bounding box the box covers, precision the share of
    the box it fills."""
    boxes = np.clip(xyxy, 0, [maps.width, maps.height, maps.width, maps.height])
    score = np.zeros(len(boxes))
    for i, box in enumerate(boxes):
        obj = _dark_extent(maps, box)
        if obj is None:
            continue
        iw = max(0.0, min(box[2], obj[2]) - max(box[0], obj[0]))
        ih = max(0.0, min(box[3], obj[3]) - max(box[1], obj[1]))
        box_area = (box[2] - box[0]) * (box[3] - box[1])
        obj_area = (obj[2] - obj[0]) * (obj[3] - obj[1])
        if iw * ih == 0 or box_area <= 0:
            continue
        precision, recall = iw * ih / box_area, iw * ih / obj_area
        score[i] = (1 + beta**2) * precision * recall / (beta**2 * precision + recall)
    return score


Scores = tuple[np.ndarray, np.ndarray, np.ndarray]  # (contrast, fit, extent) per box


def score_image(rgb: np.ndarray, rows: np.ndarray) -> dict[str, Scores]:
    """``{"given" | perturbation: (contrast, fit, extent)}`` per box for YOLO rows ``(cx, cy, w, h)`` of one
    image."""
    maps = ImageMaps(rgb)
    given = xywhn_to_xyxy(rows, maps.width, maps.height)
    out = {"given": (contrast_score(maps, given), fit_score(maps, given, given), extent_score(maps, given))}
    for name, (_, fn) in PERTURBATIONS.items():
        moved = xywhn_to_xyxy(fn(rows.copy()), maps.width, maps.height)
        out[name] = (contrast_score(maps, moved), fit_score(maps, moved, given), extent_score(maps, moved))
    return out


# ---------------------------------------------------------------------------------------------- doctor
def _sample(ds: Dataset, split: str, max_images: int, seed: int) -> list[Path]:
    """A seeded sample of the images whose label file holds a row (not just blanks).

    Only the sampled label files are parsed (strictly, later): a bad line elsewhere in the split is
    ``xraydet data check``'s to report, not a reason to refuse the sample.
    """
    labelled = [img for img, lab in ds.iter_samples(split) if lab.is_file() and lab.read_bytes().strip()]
    if len(labelled) <= max_images:
        return labelled
    rng = np.random.default_rng(seed)
    return [labelled[i] for i in sorted(rng.choice(len(labelled), max_images, replace=False))]


def _capped(t: float) -> float:
    return max(-T_CAP, min(T_CAP, t))  # JSON has no infinity (identical differences)


def _decide(ts: dict[Score, float]) -> tuple[Literal["ok", "flagged", "inconclusive"], Score]:
    """Decision on one perturbation from the t of each of its family's scores, and the score that decides.

    Flagged when any score prefers the perturbation (``t >= T_DECIDE``); ok when none leans towards it
    (every ``t <= 0``) and one clearly prefers the given labels (``t <= -T_DECIDE``); else inconclusive.

    Example:
        >>> _decide({"fit": -2.4, "extent": -11.8}), _decide({"fit": 0.9, "extent": -8.8})
        (('ok', 'extent'), ('inconclusive', 'fit'))
    """
    highest, lowest = max(ts, key=lambda s: ts[s]), min(ts, key=lambda s: ts[s])
    if ts[highest] >= T_DECIDE:
        return "flagged", highest
    if ts[highest] <= 0 and ts[lowest] <= -T_DECIDE:
        return "ok", lowest
    return "inconclusive", highest


def _verdict(scores: dict[str, list[Scores]]) -> tuple[dict[Score, float], list[PerturbationScore]]:
    """The given labels' mean of each score, and each perturbation judged on its family's scores."""
    names: tuple[Score, ...] = ("contrast", "fit", "extent")
    tables = {
        s: {k: np.concatenate([v[i] for v in vs]) for k, vs in scores.items()} for i, s in enumerate(names)
    }
    results = []
    for name, (family, _) in PERTURBATIONS.items():
        ts = {s: paired_t(tables[s][name] - tables[s]["given"]) for s in FAMILY_SCORES[family]}
        decision, deciding = _decide(ts)
        t = ts[deciding]
        ref, mine = tables[deciding]["given"], tables[deciding][name]
        results.append(
            PerturbationScore(
                name=name,
                family=family,
                contrast=float(tables["contrast"][name].mean()),
                fit=float(tables["fit"][name].mean()),
                extent=float(tables["extent"][name].mean()),
                win_rate=float((ref > mine).mean() + 0.5 * (ref == mine).mean()),
                t_stat=_capped(t),
                t_by_score={s: _capped(v) for s, v in ts.items()},
                decided_by=deciding,
                decision=decision,
            )
        )
    return {s: float(tables[s]["given"].mean()) for s in names}, results


def paired_t(diff: np.ndarray) -> float:
    """The t statistic of the mean of paired differences (0 when it cannot be computed).

    Example:
        >>> round(paired_t(np.array([1.0, 2.0, 3.0])), 3)
        3.464
        >>> paired_t(np.array([0.5, 0.5])), paired_t(np.array([1.0]))
        (inf, 0.0)
    """
    if len(diff) < 2:
        return 0.0
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    if sd == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / (sd / math.sqrt(len(diff)))


def open_upright(image: Path) -> Image.Image:
    """The image in RGB, turned upright by its EXIF orientation: the pixels YOLO labels refer to (Ultralytics
    loads images with OpenCV, which applies the orientation)."""
    with pil_open(image) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def _open_rgb(image: Path) -> np.ndarray | None:
    """The upright image as an RGB array, or None (logged) if PIL cannot open or decode it."""
    try:
        return np.asarray(open_upright(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        log.warning("skipping %s: cannot open the image (%s); run `xraydet data check`", image, err)
        return None


def _fault_kind(name: str) -> str:
    """The fault a flagged perturbation points at, in the user's words.

    Example:
        >>> [_fault_kind(n) for n in ("transposed", "shift_up", "rebinned_1000", "scale_2x")]
        ['transposed', 'shifted', 'rebinned (read over 1000 bins?)', 'mis-scaled']
    """
    if name == "transposed":
        return "transposed"
    if name.startswith("shift"):
        return "shifted"
    if name.startswith("rebinned"):
        return "rebinned (read over 1000 bins?)"
    return "mis-scaled"


def _faults(perturbations: list[PerturbationScore]) -> list[str]:
    faults = []
    for p in perturbations:
        if not p.flagged:
            continue
        kind = _fault_kind(p.name)
        if kind not in faults:
            faults.append(kind)
    return faults


def doctor(
    dataset: str | Path,
    split: str | None = None,
    *,
    out_dir: Path | None = None,
    max_images: int = 300,
    seed: int = 0,
    sheet_crops: int = 48,
    probe: bool = False,
    probe_images: int = 24,
    probe_epochs: int = 40,
    probe_imgsz: int = 160,
    progress: Callable[[int, int], None] | None = None,
) -> DoctorReport:
    """Check that a data set's boxes sit on objects; see the module docstring for the method.

    Args:
        dataset: A data.yaml or a folder with one.
        split: Split to check (default ``val`` when present, else ``train``).
        out_dir: Where to write ``doctor.json``, ``scores.png`` and ``contact_sheets/<class>.png``.
        max_images: Labelled images sampled (seeded) for the scores.
        probe: Also run the overfit probe (trains a tiny model on a temporary copy).
        progress: Called with ``(done, total)`` images.

    Example:
        >>> report = doctor("data/synth/data.yaml")  # doctest: +SKIP
        >>> report.verdict, report.faults  # doctest: +SKIP
        ('pass', [])
    """
    if out_dir is not None:  # refuse a wrong --out before the work, not after it
        check_output_dir(out_dir, (DOCTOR_JSON,), "doctor output")
    if max_images < 1:
        raise ConfigError(f"max_images (--max-images) must be at least 1, got {max_images}")
    ds = load_dataset(dataset)
    split = split or ("val" if "val" in ds.splits else next(iter(ds.splits), "val"))
    images = _sample(ds, split, max_images, seed)
    scores: dict[str, list[Scores]] = {}
    n_boxes = 0
    scored: list[Path] = []
    unreadable: list[str] = []
    for i, image in enumerate(images):
        rows = read_label_file(label_path_for(image))
        rgb = _open_rgb(image)
        if rgb is None:
            unreadable.append(str(image))
        else:
            for name, value in score_image(rgb, rows[:, 1:]).items():
                scores.setdefault(name, []).append(value)
            n_boxes += len(rows)
            scored.append(image)
        if progress is not None:
            progress(i + 1, len(images))
    images = scored
    if n_boxes == 0:  # no sampled box: nothing to score (and every mean would be NaN)
        report = DoctorReport(
            dataset=str(dataset),
            split=split,
            names=ds.names,
            n_images=len(images),
            n_boxes=0,
            given_contrast=0.0,
            given_fit=0.0,
            perturbations=[],
            verdict="no-labels",
            faults=[],
            unreadable=unreadable,
        )
    else:
        given, perturbations = _verdict(scores)
        faults = _faults(perturbations)
        report = DoctorReport(
            dataset=str(dataset),
            split=split,
            names=ds.names,
            n_images=len(images),
            n_boxes=n_boxes,
            given_contrast=given["contrast"],
            given_fit=given["fit"],
            given_extent=given["extent"],
            perturbations=perturbations,
            verdict="flagged" if faults else "pass",
            faults=faults,
            inconclusive=[p.name for p in perturbations if p.decision == "inconclusive"],
            unreadable=unreadable,
        )
    if probe:
        report.probe = probe_overfit(
            ds, split, n_images=probe_images, epochs=probe_epochs, imgsz=probe_imgsz, seed=seed
        )
    if out_dir is not None:
        _write_out_dir(report, ds, images, Path(out_dir), sheet_crops)
    return report


def _write_out_dir(report: DoctorReport, ds: Dataset, images: list[Path], out_dir: Path, crops: int) -> None:
    """Write doctor.json, scores.png and the contact sheets as one folder, atomically (an earlier doctor
    folder is replaced); the paths in the report are the final ones."""
    check_output_dir(out_dir, (DOCTOR_JSON,), "doctor output")
    with atomic_directory(out_dir, overwrite=True) as tmp:
        sheets = write_contact_sheets(ds, images, tmp / "contact_sheets", per_class=crops)
        report.contact_sheets = [str(out_dir / p.relative_to(tmp)) for p in sheets]
        if report.perturbations:
            plot_scores(report, tmp / "scores.png")
            report.plot = str(out_dir / "scores.png")
        atomic_write_json(tmp / DOCTOR_JSON, report.model_dump(mode="json"))


# ----------------------------------------------------------------------------------------------- probe
def probe_overfit(
    ds: Dataset,
    split: str,
    *,
    n_images: int = 24,
    epochs: int = 40,
    imgsz: int = 160,
    seed: int = 0,
    workdir: Path | None = None,
) -> ProbeResult:
    """Train yolov8n (from its YAML) on a temporary copy of ``n_images`` labelled images and validate on the
    same images. If the train-set mAP50 does not climb, the labels and images disagree."""
    from ultralytics import YOLO

    from xraydet.ultralytics_env import offline_guard

    images = _sample(ds, split, n_images, seed)
    if not images:
        return ProbeResult(
            images=0, epochs=0, imgsz=imgsz, map50=[], climbed=False, verdict="no labelled images"
        )
    root = Path(tempfile.mkdtemp(prefix="xraydet-probe-", dir=workdir))
    try:
        for sub in ("images/train", "labels/train"):
            (root / sub).mkdir(parents=True)
        for i, image in enumerate(images):
            stem = f"{i:05d}_{image.stem}"
            shutil.copyfile(image, root / "images/train" / f"{stem}{image.suffix}")
            shutil.copyfile(label_path_for(image), root / "labels/train" / f"{stem}.txt")
        data = write_data_yaml(root, ds.names, {"train": "images/train", "val": "images/train"})
        with offline_guard():
            model = YOLO("yolov8n.yaml")
            model.train(
                data=str(data),
                epochs=epochs,
                imgsz=imgsz,
                batch=2,
                device="cpu",
                workers=0,
                project=str(root),
                name="run",
                exist_ok=True,
                plots=False,
                verbose=False,
                seed=seed,
                deterministic=True,
                amp=False,
                val=True,
                # Memorise, don't generalise: many small steps at a high rate, no warm-up, no augmentation.
                # From scratch on CPU this reaches a train-set mAP50 of about 0.1 in 40 epochs on good labels.
                optimizer="SGD",
                lr0=0.02,
                warmup_epochs=0,
                mosaic=0.0,
                hsv_h=0.0,
                hsv_s=0.0,
                hsv_v=0.0,
                translate=0.0,
                scale=0.0,
                fliplr=0.0,
                erasing=0.0,
            )
        map50 = _read_map50(root / "run" / "results.csv")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first, best = (map50[0], max(map50)) if map50 else (0.0, 0.0)
    climbed = bool(map50) and best >= first + 0.05
    verdict = (
        f"train-set mAP50 climbed from {first:.3f} to {best:.3f}"
        if climbed
        else f"train-set mAP50 did not climb ({first:.3f} -> {best:.3f}): labels and images may disagree"
    )
    return ProbeResult(
        images=len(images), epochs=epochs, imgsz=imgsz, map50=map50, climbed=climbed, verdict=verdict
    )


def _read_map50(csv_path: Path) -> list[float]:
    if not csv_path.is_file():
        return []
    lines = [ln.split(",") for ln in csv_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    header = [h.strip() for h in lines[0]]
    col = header.index("metrics/mAP50(B)")
    return [float(row[col]) for row in lines[1:]]


# --------------------------------------------------------------------------------------------- figures
def _crop_tile(image: Image.Image, box: np.ndarray, tile: int) -> Image.Image:
    """The box with a quarter of its size as margin, fitted into a ``tile`` square, box outlined in red."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = 0.25 * (x2 - x1) + 2, 0.25 * (y2 - y1) + 2
    cx1, cy1 = max(int(x1 - mx), 0), max(int(y1 - my), 0)
    cx2, cy2 = min(int(np.ceil(x2 + mx)), image.width), min(int(np.ceil(y2 + my)), image.height)
    crop = image.crop((cx1, cy1, max(cx2, cx1 + 1), max(cy2, cy1 + 1)))
    scale = tile / max(crop.width, crop.height)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))
    draw = ImageDraw.Draw(crop)
    draw.rectangle(
        [(x1 - cx1) * scale, (y1 - cy1) * scale, (x2 - cx1) * scale - 1, (y2 - cy1) * scale - 1],
        outline=(255, 0, 0),
    )
    out = Image.new("RGB", (tile, tile), (40, 40, 40))
    out.paste(crop, ((tile - crop.width) // 2, (tile - crop.height) // 2))
    return out


def write_contact_sheets(
    ds: Dataset, images: list[Path], out_dir: Path, per_class: int = 48, tile: int = 96, columns: int = 8
) -> list[Path]:
    """One PNG per class with up to ``per_class`` box crops (red outline = the label) to eyeball."""
    from xraydet.io import atomic_write_bytes

    crops: dict[int, list[Image.Image]] = {}
    for image in images:
        rows = read_label_file(label_path_for(image))
        wanted = [i for i, r in enumerate(rows) if len(crops.get(int(r[0]), [])) < per_class]
        if not wanted:
            continue
        rgb = open_upright(image)
        boxes = xywhn_to_xyxy(rows[:, 1:], rgb.width, rgb.height)
        for i in wanted:
            crops.setdefault(int(rows[i, 0]), []).append(_crop_tile(rgb, boxes[i], tile))
    written = []
    for cls, tiles in sorted(crops.items()):
        name = ds.names[cls] if cls < len(ds.names) else f"class_{cls}"
        n_rows = (len(tiles) + columns - 1) // columns
        sheet = Image.new("RGB", (columns * (tile + 2), n_rows * (tile + 2) + 16), (255, 255, 255))
        ImageDraw.Draw(sheet).text((4, 2), f"{name}: {len(tiles)} crops (red = label)", fill=(0, 0, 0))
        for i, t in enumerate(tiles):
            sheet.paste(t, ((i % columns) * (tile + 2) + 1, 16 + (i // columns) * (tile + 2) + 1))
        import io

        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        written.append(atomic_write_bytes(out_dir / f"{cls:02d}_{safe}.png", buf.getvalue()))
    return written


def plot_scores(report: DoctorReport, path: Path) -> Path:
    """Bar charts of contrast, fit and extent for the given labels and every perturbation (flagged in red)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xraydet.io import atomic_write_bytes

    names = ["given"] + [p.name for p in report.perturbations]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    panels = (("contrast", report.given_contrast), ("fit", report.given_fit), ("extent", report.given_extent))
    for ax, (key, given) in zip(axes, panels, strict=True):
        values = [given] + [getattr(p, key) for p in report.perturbations]
        family = "position" if key == "contrast" else "size"
        colours = ["tab:green"] + [
            ("tab:red" if p.flagged else "tab:blue") if p.family == family else "lightgrey"
            for p in report.perturbations
        ]
        ax.bar(range(len(values)), values, color=colours)
        ax.axhline(given, color="tab:green", lw=0.8, ls="--")
        ax.set_xticks(range(len(values)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{key} (judges {family})")
    fig.suptitle(f"label-content scores: {report.verdict} ({report.n_boxes} boxes, split {report.split})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
