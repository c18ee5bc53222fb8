"""Compare several models on the same sampled images: one table, Markdown and JSON.

Every model is evaluated by :func:`~xraydet.evaluation.runner.evaluate` with the same ``max_images`` and
``seed``, so all of them see exactly the same images (the seed kept ``MODEL_COMPARISON_ALL.md`` and a
50-sample comparison the same way). Models are weights files, registry references or ``http(s)://`` URLs of
a running xraydet API (its latency then includes the network round trip).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from xraydet.errors import ConfigError
from xraydet.evaluation.report import EvalReport, format_number
from xraydet.io import atomic_directory, atomic_write_json, atomic_write_text, check_output_dir


class ComparisonRow(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    backend: str
    tta: str = "off"
    n_images: int
    n_negative_images: int
    map50: float | None  # None: the sampled images hold no label
    map75: float | None = None
    map50_95: float | None
    precision: float | None
    recall: float | None
    accuracy: float | None
    threat_detection_rate: float | None
    threat_detection_rate_any: float | None
    threats_found: int
    n_threat_bags: int
    false_alarm_rate: float | None
    avg_detections: float
    p50_ms: float | None
    p95_ms: float | None
    images_per_s: float | None
    report_dir: str | None = None

    @classmethod
    def from_report(cls, name: str, report: EvalReport, report_dir: Path | None = None) -> ComparisonRow:
        s, lat = report.screening, report.latency
        return cls(
            model=name,
            backend=report.backend,
            tta=report.tta,
            n_images=report.n_images,
            n_negative_images=report.n_negative_images,
            map50=report.box.map50,
            map75=report.box.map75,
            map50_95=report.box.map50_95,
            precision=report.box.precision,
            recall=report.box.recall,
            accuracy=s.accuracy,
            threat_detection_rate=s.threat_detection_rate,
            threat_detection_rate_any=s.threat_detection_rate_any,
            threats_found=s.threats_found,
            n_threat_bags=s.n_threat_bags,
            false_alarm_rate=s.false_alarm_rate,
            avg_detections=s.avg_detections,
            p50_ms=lat.p50_ms,
            p95_ms=lat.p95_ms,
            images_per_s=lat.images_per_s,
            report_dir=None if report_dir is None else str(report_dir),
        )


class Comparison(BaseModel):
    created: str
    dataset: str
    split: str
    n: int
    seed: int
    conf: float
    negatives: list[str]
    rows: list[ComparisonRow]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "model"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def render_comparison(cmp: Comparison) -> str:
    """The comparison as a Markdown table, best mAP50 in bold."""
    best = max((r.map50 for r in cmp.rows if r.map50 is not None), default=None)
    header = [
        "model",
        "backend",
        "mAP50",
        "mAP75",
        "mAP50-95",
        "seed accuracy",
        "threat detection",
        "any threat box",
        "threats found",
        "false alarms",
        "avg det/img",
        "p50 ms",
        "p95 ms",
        "img/s",
    ]
    lines = [
        "# Model comparison",
        "",
        f"{cmp.n} images sampled with seed {cmp.seed} from `{cmp.dataset}` (split `{cmp.split}`), the same "
        f"for every model; threat-free folders: {', '.join(cmp.negatives) or 'none'}; "
        f"operating threshold {cmp.conf}. "
        "Seed accuracy = class of the top-1 box equals the image's first label (the seed plan's 'Accuracy').",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for r in cmp.rows:
        map50 = (
            f"**{r.map50:.3f}**"
            if best is not None and r.map50 == best and len(cmp.rows) > 1
            else format_number(r.map50)
        )
        cells = [
            f"`{r.model}`",
            r.backend if r.tta == "off" else f"{r.backend}, TTA {r.tta}",
            map50,
            format_number(r.map75),
            format_number(r.map50_95),
            _pct(r.accuracy),
            _pct(r.threat_detection_rate),
            _pct(r.threat_detection_rate_any),
            f"{r.threats_found}/{r.n_threat_bags}",
            _pct(r.false_alarm_rate),
            format_number(r.avg_detections, 2),
            format_number(r.p50_ms, 1),
            format_number(r.p95_ms, 1),
            format_number(r.images_per_s, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_models(
    models: Sequence[str | Path],
    dataset: str | Path,
    *,
    n: int = 50,
    seed: int = 0,
    split: str = "val",
    conf: float = 0.25,
    negatives: Sequence[str | Path] | None = None,
    out_dir: str | Path | None = None,
    backend: str = "auto",
    imgsz: int | None = None,
    tta: str = "off",
) -> Comparison:
    """Evaluate each model on the same ``n`` seeded images; write comparison.md/.json (and per-model reports).

    Example:
        >>> cmp = compare_models(["a.pt", "b.onnx", "http://127.0.0.1:8000"], "d.yaml")  # doctest: +SKIP
        >>> [r.map50 for r in cmp.rows]  # doctest: +SKIP
    """
    from xraydet.evaluation.report import is_url
    from xraydet.evaluation.runner import model_file

    served = [str(m) for m in models if is_url(m)]
    if tta != "off" and served:  # refused now, not after the models before it were evaluated
        raise ConfigError(
            f"--tta {tta}: {', '.join(served)} applies its server's own test-time augmentation "
            "(xraydet serve --tta); compare served models with --tta off"
        )
    out = None if out_dir is None else Path(out_dir)
    if out is not None:  # an earlier comparison is replaced whole; any other non-empty folder is refused
        check_output_dir(out, ("comparison.json",), "comparison")
    for model in models:  # a missing file or unknown registry name is found now, before any evaluation
        if not is_url(model):
            model_file(model)
    options = dict(dataset=dataset, split=split, negatives=negatives, conf=conf, max_images=n, seed=seed,
                   backend=backend, imgsz=imgsz, tta=tta)
    if out is None:
        rows = _evaluate_each(models, None, None, options)
        return _comparison(dataset, split, n, seed, conf, negatives, rows)
    with atomic_directory(out, overwrite=True) as tmp:  # a failure part-way leaves the earlier one as it was
        cmp = _comparison(dataset, split, n, seed, conf, negatives, _evaluate_each(models, tmp, out, options))
        atomic_write_json(tmp / "comparison.json", cmp.model_dump(mode="json"))
        atomic_write_text(tmp / "comparison.md", render_comparison(cmp))
    return cmp


def _evaluate_each(
    models: Sequence[str | Path], build: Path | None, final: Path | None, options: dict[str, Any]
) -> list[ComparisonRow]:
    """One row per model; each report is written under ``build`` and named by its place under ``final``."""
    from xraydet.evaluation.runner import evaluate

    rows = []
    for i, model in enumerate(models):
        label = str(model).rstrip("/")
        name = f"{i + 1:02d}_{_slug(label.rsplit('/', 1)[-1])}"
        report = evaluate(model, out_dir=None if build is None else build / "models" / name, **options)
        report_dir = None if final is None else final / "models" / name
        rows.append(ComparisonRow.from_report(label, report, report_dir))
    return rows


def _comparison(
    dataset: str | Path,
    split: str,
    n: int,
    seed: int,
    conf: float,
    negatives: Sequence[str | Path] | None,
    rows: list[ComparisonRow],
) -> Comparison:
    return Comparison(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        dataset=str(dataset),
        split=split,
        n=n,
        seed=seed,
        conf=conf,
        negatives=[str(p) for p in negatives or []],
        rows=rows,
    )
