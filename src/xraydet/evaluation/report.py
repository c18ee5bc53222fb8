"""The evaluation report: one pydantic record (``report.json``), its Markdown rendering, and loading it back.

A report folder holds ``report.json``, ``report.md``, ``predictions.jsonl`` (one line per image: its boxes at
the operating threshold and its labels, read by ``xraydet review``) and PNG plots.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xraydet.errors import XrayDetError
from xraydet.evaluation.box_metrics import iou_index

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PREDICTIONS_JSONL = "predictions.jsonl"


class BoxMetrics(BaseModel):
    """COCO-style box metrics over all predictions at conf 0.001; P/R at the operating ``conf``.

    ``per_class_ap_by_iou`` holds each class's AP at every IoU threshold of ``iou_thresholds``
    (0.50:0.05:0.95); reports written before these fields existed load with ``map75`` None and both empty.
    """

    #: None when the evaluated images hold no label at all (threat-free bags only): not measured, not 0
    map50: float | None
    #: mean over labelled classes of AP at IoU 0.75 (COCO's AP75); None in reports written before it was kept
    map75: float | None = None
    map50_95: float | None
    per_class_ap50: dict[str, float | None]
    per_class_ap50_95: dict[str, float | None]
    precision: float | None
    recall: float | None
    per_class_precision: dict[str, float | None]
    per_class_recall: dict[str, float | None]
    per_class_labels: dict[str, int]
    n_images: int
    n_labels: int
    conf: float
    confusion_matrix: list[list[int]]
    confusion_labels: list[str]
    pr_curves: dict[str, list[float]] = Field(default_factory=dict)
    per_class_ap_by_iou: dict[str, list[float] | None] = Field(default_factory=dict)
    iou_thresholds: list[float] = Field(default_factory=list)

    def ap_at(self, name: str, iou: float) -> float | None:
        """AP of class ``name`` at the IoU threshold ``iou``; None if the class has no label or the report
        does not hold AP at that threshold.

        Example:
            >>> box = BoxMetrics(map50=1.0, map50_95=0.75, per_class_ap50={}, per_class_ap50_95={},
            ...     precision=1.0, recall=1.0, per_class_precision={}, per_class_recall={},
            ...     per_class_labels={}, n_images=1, n_labels=1, conf=0.25, confusion_matrix=[],
            ...     confusion_labels=[],
            ...     per_class_ap_by_iou={"knife": [1.0, 0.5]}, iou_thresholds=[0.5, 0.55])
            >>> box.ap_at("knife", 0.55), box.ap_at("knife", 0.75), box.ap_at("gun", 0.5)
            (0.5, None, None)
        """
        return _at(self.per_class_ap_by_iou.get(name), self.iou_thresholds, iou)

    def mean_ap_by_iou(self) -> list[float]:
        """Mean over labelled classes of AP at each IoU threshold (empty if the report does not hold them)."""
        n = len(self.iou_thresholds)
        rows = [v for v in self.per_class_ap_by_iou.values() if v is not None and len(v) == n]
        return [sum(col) / len(col) for col in zip(*rows, strict=True)] if rows else []


def _at(values: list[float] | None, thresholds: list[float], iou: float) -> float | None:
    """The value of ``values`` (one per IoU threshold) at ``iou``; None if it has none there."""
    try:
        i = iou_index(iou, thresholds)
    except ValueError:
        return None
    return values[i] if values is not None and i < len(values) else None


class ScreeningMetrics(BaseModel):
    """Bag-level metrics at the operating threshold (definitions in :mod:`xraydet.evaluation.screening`)."""

    conf: float
    overlap_iou: float
    n_bags: int
    n_threat_bags: int
    n_threat_free_bags: int
    n_negative_bags: int
    threats_found: int
    threats_found_any: int
    threat_detection_rate: float | None
    threat_detection_rate_any: float | None
    false_alarms: int
    false_alarm_rate: float | None
    false_alarm_rate_negatives: float | None
    accuracy: float | None
    accuracy_label: str
    n_accuracy_images: int
    per_class_accuracy: dict[str, float]
    avg_detections: float
    avg_detections_negatives: float | None


class SweepPoint(BaseModel):
    threshold: float
    detection_rate: float | None
    detection_rate_any: float | None
    false_alarm_rate: float | None


class SweepResult(BaseModel):
    target_detection: float
    recommended_threshold: float | None
    recommended: SweepPoint | None
    note: str = ""
    points: list[SweepPoint]


class LatencyStats(BaseModel):
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None
    images_per_s: float | None
    n_images: int
    backend: str
    device: str
    imgsz: int | None
    conf: float


class EvalReport(BaseModel):
    """Everything ``xraydet eval`` measured, plus what was measured on (model, data, settings)."""

    model_config = ConfigDict(protected_namespaces=())

    report_id: str
    created: str
    xraydet_version: str
    model: str
    #: SHA-256 of the evaluated weights file (``None`` for a deployment URL or a predictor without a file).
    model_sha256: str | None = None
    backend: str
    dataset: str
    split: str
    negatives: list[str]
    names: list[str]
    threats: list[str]
    conf: float
    eval_conf: float
    max_det: int
    imgsz: int | None
    #: test-time augmentation of the predictions (``off``, ``hflip``, ``flips``; older reports: ``off``).
    tta: str = "off"
    seed: int
    n_images: int
    n_negative_images: int
    box: BoxMetrics
    screening: ScreeningMetrics
    sweep: SweepResult
    latency: LatencyStats
    plots: list[str] = Field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def model_name(self) -> str:
        """A short label: the weights file's name, or a deployment URL whole (``Path`` mangles URLs)."""
        return self.model if is_url(self.model) else Path(self.model).name


def is_url(model: str | Path) -> bool:
    """Whether ``model`` names a served model (``http(s)://``) rather than a file or registry reference."""
    return str(model).startswith(("http://", "https://"))


def report_folder(path: str | Path) -> Path:
    """The folder of a report given as its folder or its ``report.json``: where its review and gate.json go.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> report_folder(folder / REPORT_JSON) == report_folder(folder) == folder
        True
    """
    path = Path(path)
    return path if path.is_dir() else path.parent


def load_report(path: str | Path) -> EvalReport:
    """Read ``report.json`` from a report folder (or the file itself); errors name the file."""
    path = Path(path)
    file = path / REPORT_JSON if path.is_dir() else path
    if not file.is_file():
        raise XrayDetError(
            f"{file}: no evaluation report here (run `xraydet eval MODEL DATASET --out DIR` first)"
        )
    try:
        return EvalReport.model_validate(json.loads(file.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as err:
        raise XrayDetError(f"{file}: not a valid evaluation report ({err})") from err


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def format_number(value: float | None, digits: int = 3) -> str:
    """A metric for a table: ``digits`` decimals, or ``n/a`` when it is missing.

    Example:
        >>> format_number(0.84812), format_number(None), format_number(0.25, 2)
        ('0.848', 'n/a', '0.25')
    """
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _drop(high: float | None, low: float | None) -> str:
    """``high - low``, with the share of ``high`` it is (``0.300 (60%)``)."""
    if high is None or low is None:
        return "n/a"
    return f"{high - low:.3f}" + (f" ({(high - low) / high:.0%})" if high > 0 else "")


def _localization(report: EvalReport) -> list[str]:
    """The "Localization" section: AP at IoU 0.5, 0.75 and 0.9 per class and the drop from AP50 to AP75."""
    b = report.box
    if not b.per_class_ap_by_iou:
        return [
            "## Localization",
            "",
            "AP by IoU threshold is not in this report (written before it was kept).",
            "",
        ]
    lines = [
        "## Localization",
        "",
        "AP at IoU t counts a box as a hit only if it overlaps its label by at least t. A big drop from AP50 "
        "to AP75 means the boxes are found but drawn loosely; a small drop means the boxes found are also "
        "tight." + (" AP at every threshold: `ap_by_iou.png`." if "ap_by_iou.png" in report.plots else ""),
        "",
    ]
    at = {n: (b.ap_at(n, 0.5), b.ap_at(n, 0.75), b.ap_at(n, 0.9)) for n in report.names}
    mean = b.mean_ap_by_iou()
    if mean:
        t = b.iou_thresholds
        at["mean (labelled classes)"] = (_at(mean, t, 0.5), _at(mean, t, 0.75), _at(mean, t, 0.9))
    rows = [
        [n, *(format_number(ap) for ap in (ap50, ap75, ap90)), _drop(ap50, ap75)]
        for n, (ap50, ap75, ap90) in at.items()
    ]
    return lines + _table(["class", "AP50", "AP75", "AP90", "drop AP50 -> AP75"], rows) + [""]


def render_markdown(report: EvalReport) -> str:
    """The report as Markdown: headline numbers first, then per-class tables, the sweep and latency."""
    b, s, w, lat = report.box, report.screening, report.sweep, report.latency
    lines = [
        f"# Evaluation of `{report.model_name}`",
        "",
        f"- model: `{report.model}` ({report.backend}, imgsz {report.imgsz}"
        + (f", test-time augmentation {report.tta}" if report.tta != "off" else "")
        + ")"
        + (f", sha256 `{report.model_sha256[:12]}`" if report.model_sha256 else ""),
        f"- data: `{report.dataset}` split `{report.split}`: {report.n_images} images; "
        f"threat-free folders: {', '.join(f'`{n}`' for n in report.negatives) or 'none'} "
        f"({report.n_negative_images} images)",
        f"- operating threshold: {report.conf}; mAP from all predictions at conf {report.eval_conf} "
        f"(max {report.max_det} per image)",
        f"- created {report.created}, report id `{report.report_id}`",
        "",
        "## Headline",
        "",
        *_table(
            ["metric", "value"],
            [
                ["mAP50", format_number(b.map50)],
                ["mAP75", format_number(b.map75)],
                ["mAP50-95", format_number(b.map50_95)],
                [
                    f"precision / recall @ {b.conf}",
                    f"{format_number(b.precision)} / {format_number(b.recall)}",
                ],
                [
                    f"threat detection rate (threat box IoU >= {s.overlap_iou} with a threat)",
                    f"{_pct(s.threat_detection_rate)} ({s.threats_found}/{s.n_threat_bags})",
                ],
                [
                    "threat detection rate (any threat box in the bag)",
                    f"{_pct(s.threat_detection_rate_any)} ({s.threats_found_any}/{s.n_threat_bags})",
                ],
                [
                    "false-alarm rate (threat-free bags with a threat box)",
                    f"{_pct(s.false_alarm_rate)} ({s.false_alarms}/{s.n_threat_free_bags})",
                ],
                ["false-alarm rate, negatives folders only", _pct(s.false_alarm_rate_negatives)],
                [s.accuracy_label, f"{_pct(s.accuracy)} (of {s.n_accuracy_images})"],
                ["avg detections per image", format_number(s.avg_detections, 2)],
                [
                    "latency p50 / p95 (ms)",
                    f"{format_number(lat.p50_ms, 1)} / {format_number(lat.p95_ms, 1)}",
                ],
                ["images/s", format_number(lat.images_per_s, 1)],
            ],
        ),
        "",
        "## Per class",
        "",
        *_table(
            ["class", "labels", "AP50", "AP75", "AP50-95", f"P@{b.conf}", f"R@{b.conf}", "seed accuracy"],
            [
                [
                    n,
                    str(b.per_class_labels.get(n, 0)),
                    format_number(b.per_class_ap50.get(n)),
                    format_number(b.ap_at(n, 0.75)),
                    format_number(b.per_class_ap50_95.get(n)),
                    format_number(b.per_class_precision.get(n)),
                    format_number(b.per_class_recall.get(n)),
                    _pct(s.per_class_accuracy.get(n)),
                ]
                for n in report.names
            ],
        ),
        "",
        *_localization(report),
        f"## Threshold sweep (target detection {w.target_detection:.0%})",
        "",
        f"Recommended threshold: **{format_number(w.recommended_threshold, 2)}**"
        + (
            f" (detection {_pct(w.recommended.detection_rate)},"
            f" false alarms {_pct(w.recommended.false_alarm_rate)})"
            if w.recommended
            else ""
        )
        + (f". {w.note}" if w.note else ""),
        "",
        *_table(
            ["threshold", "detection rate", "detection rate (any box)", "false-alarm rate"],
            [
                [
                    f"{p.threshold:.2f}",
                    _pct(p.detection_rate),
                    _pct(p.detection_rate_any),
                    _pct(p.false_alarm_rate),
                ]
                for p in w.points
                if round(p.threshold * 100) % 5 == 0
            ],
        ),
        "",
        f"Latency: {lat.n_images} images, backend {lat.backend} on {lat.device}, conf {lat.conf}.",
        "",
    ]
    if report.plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report.plots] + [""]
    return "\n".join(lines)
