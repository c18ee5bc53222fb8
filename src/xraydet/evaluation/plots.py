"""PNG figures of a report: PR curve and AP by IoU threshold per class, confusion matrix, detection vs false
alarms, sample scans.

matplotlib runs on the Agg backend (no display); boxes on scans are drawn with PIL and its built-in bitmap
font, so nothing is downloaded.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xraydet.evaluation.box_metrics import RECALL_POINTS
from xraydet.evaluation.report import BoxMetrics, SweepResult, format_number
from xraydet.io import atomic_write_bytes
from xraydet.ultralytics_env import pil_open

GT_COLOUR = (40, 220, 40)
PRED_COLOUR = (255, 60, 60)


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _save_curves(fig: Any, ax: Any, path: Path, legend: bool) -> Path:
    """The per-class curve plots' end: a grid, the legend (when there are lines) lower left, saved."""
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_pr_curves(box: BoxMetrics, path: Path) -> Path:
    """Interpolated precision vs recall at IoU 0.5, one line per labelled class, AP50 in the legend."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, curve in box.pr_curves.items():
        ax.plot(RECALL_POINTS, curve, label=f"{name} (AP50 {box.per_class_ap50.get(name) or 0:.3f})")
    title = f"PR curves, mAP50 {format_number(box.map50)}"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    return _save_curves(fig, ax, path, legend=bool(box.pr_curves))


def plot_ap_by_iou(box: BoxMetrics, path: Path) -> Path:
    """AP vs IoU threshold (0.50 ... 0.95), one line per labelled class and the mean over them (dashed).

    A line that falls steeply after 0.5 belongs to a class whose boxes are found but drawn loosely.
    """
    fig, ax = plt.subplots(figsize=(6, 5))
    t = box.iou_thresholds
    for name, aps in box.per_class_ap_by_iou.items():
        if aps is not None and len(aps) == len(t):
            ax.plot(t, aps, marker=".", label=f"{name} (AP50-95 {box.per_class_ap50_95.get(name) or 0:.3f})")
    mean = box.mean_ap_by_iou()
    if mean:
        ax.plot(t, mean, color="black", ls="--", lw=2, label=f"mean (mAP50-95 {format_number(box.map50_95)})")
    title = f"AP by IoU threshold, mAP50 {format_number(box.map50)} / mAP75 {format_number(box.map75)}"
    ax.set(xlabel="IoU threshold", ylabel="AP", xlim=(0.48, 0.97), ylim=(0, 1.02), title=title)
    return _save_curves(fig, ax, path, legend=bool(mean))


def plot_confusion(box: BoxMetrics, path: Path) -> Path:
    """Confusion matrix at the operating threshold (rows true, columns predicted), row-normalised colours."""
    matrix = np.array(box.confusion_matrix, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 2.5 + 0.6 * len(box.confusion_labels)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(
                j,
                i,
                str(int(v)),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ticks = range(len(box.confusion_labels))
    ax.set_xticks(ticks, box.confusion_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, box.confusion_labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion at conf {box.conf} (IoU 0.5)")
    return _save(fig, path)


def plot_sweep(sweep: SweepResult, path: Path, operating: float | None = None) -> Path:
    """Detection rate vs false-alarm rate over thresholds, and both against the threshold."""
    pts = sweep.points
    t = np.array([p.threshold for p in pts])
    det = np.array([np.nan if p.detection_rate is None else p.detection_rate for p in pts])
    far = np.array([np.nan if p.false_alarm_rate is None else p.false_alarm_rate for p in pts])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.plot(far, det, marker=".", markersize=3)
    ax1.set(
        xlabel="false-alarm rate (threat-free bags)",
        ylabel="threat detection rate",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        title="Detection vs false alarms",
    )
    ax1.axhline(sweep.target_detection, color="grey", ls="--", lw=0.8)
    ax2.plot(t, det, label="detection rate")
    ax2.plot(t, far, label="false-alarm rate")
    ax2.set(xlabel="confidence threshold", ylim=(-0.02, 1.02), title="Rates vs threshold")
    for ax_x, label in ((operating, "operating"), (sweep.recommended_threshold, "target")):
        if ax_x is not None:
            ax2.axvline(
                ax_x, ls="--", lw=0.8, color="black" if label == "operating" else "green", label=label
            )
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def draw_record(record: dict[str, Any], size: int = 256) -> Image.Image:
    """One scan with labels (green) and predictions at the operating threshold (red, class and score)."""
    with pil_open(record["image"]) as im:
        canvas = im.convert("RGB")
    scale = size / max(canvas.size)
    canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for box in record.get("gt", []):
        draw.rectangle([v * scale for v in box["xyxy"]], outline=GT_COLOUR, width=2)
    for box in record.get("pred", []):
        xyxy = [v * scale for v in box["xyxy"]]
        draw.rectangle(xyxy, outline=PRED_COLOUR, width=2)
        draw.text(
            (xyxy[0] + 2, max(0, xyxy[1] - 11)),
            f"{box['name']} {box['confidence']:.2f}",
            fill=PRED_COLOUR,
            font=font,
        )
    return canvas


def sample_grid(records: list[dict[str, Any]], path: Path, n: int = 12, seed: int = 0, cols: int = 4) -> Path:
    """A grid of ``n`` random scans (seeded) with their boxes; file name and source under each tile."""
    picked = random.Random(seed).sample(records, min(n, len(records)))
    tile = 256
    rows = max(1, -(-len(picked) // cols))
    grid = Image.new("RGB", (cols * tile, rows * (tile + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, record in enumerate(picked):
        x, y = (i % cols) * tile, (i // cols) * (tile + 14)
        grid.paste(draw_record(record, tile), (x, y))
        draw.text(
            (x + 2, y + tile + 1),
            f"{Path(record['image']).name} ({record['source']})",
            fill=(0, 0, 0),
            font=font,
        )
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
