"""``evaluate()``: predict once per image at a low confidence and feed every evaluator from that one pass.

Predictions are made at conf 0.001 (up to 300 boxes per image). Box metrics rank all of them; screening
metrics, precision/recall and the review file keep only boxes at or above the operating threshold ``conf``.
Latency is timed afterwards on the warm model, at the operating settings, over a sample of the images.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from xraydet import __version__
from xraydet.data.dataset import Dataset, load_dataset
from xraydet.errors import ConfigError, XrayDetError
from xraydet.evaluation.box_metrics import BoxEvaluator
from xraydet.evaluation.evaluator import DATASET, NEGATIVES, EvaluatorGroup, Sample
from xraydet.evaluation.latency import measure_latency
from xraydet.evaluation.report import (
    PREDICTIONS_JSONL,
    REPORT_JSON,
    REPORT_MD,
    BoxMetrics,
    EvalReport,
    LatencyStats,
    ScreeningMetrics,
    SweepResult,
    is_url,
    render_markdown,
)
from xraydet.evaluation.screening import ScreeningEvaluator
from xraydet.evaluation.sweep import SweepEvaluator
from xraydet.inference.base import Predictor, load_rgb
from xraydet.inference.tta import VIEW_CONF, check_tta
from xraydet.io import (
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    sha256_file,
)
from xraydet.structures import Detections

log = logging.getLogger(__name__)

# the floor TTA predicts its views to: a served answer at conf c is then this prediction cut at c
EVAL_CONF = VIEW_CONF
MAX_DET = 300
NMS_IOU = 0.7
Progress = Callable[[int, int], None]


def model_file(model: str | Path) -> Path:
    """The local weights file of a path or a registry reference (downloaded into the registry cache)."""
    text = str(model)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.suffix in {".pt", ".onnx"}:
        raise XrayDetError(f"{path}: model file not found")
    try:
        from xraydet.registry import resolve_model
    except ImportError as err:
        raise XrayDetError(
            f"{text}: not a model file, and the model registry is not available ({err})"
        ) from err
    return resolve_model(text)


def resolve_predictor(
    model: str | Path | Predictor,
    backend: str = "auto",
    imgsz: int | None = None,
    device: str = "cpu",
    tta: str = "off",
) -> Predictor:
    """A :class:`Predictor` from a predictor, weights file, ``http(s)://`` URL or registry reference.

    ``tta`` wraps a predictor or a model file in test-time augmentation. An API applies its own (``xraydet
    serve --tta``), so a URL with ``tta`` other than ``off`` is refused rather than augmented twice.
    """
    from xraydet.inference import load_predictor, with_tta

    served = getattr(model, "backend", None) == "http" if isinstance(model, Predictor) else is_url(model)
    if served and check_tta(tta) != "off":
        source = model.source if isinstance(model, Predictor) else model
        raise ConfigError(
            f"--tta {tta}: {source} is a served model, which applies the server's own test-time "
            "augmentation (xraydet serve --tta); evaluate it with --tta off"
        )
    if isinstance(model, Predictor):
        return with_tta(model, tta)
    if is_url(model):
        from xraydet.inference.http_backend import HttpPredictor

        return HttpPredictor(str(model))
    return load_predictor(model_file(model), backend=backend, device=device, imgsz=imgsz, tta=tta)


def class_mapping(model_names: Sequence[str], dataset_names: Sequence[str]) -> np.ndarray | None:
    """Map model class ids to data set class ids by name (case-insensitive); None when they are identical.

    Model classes the data set does not know map to -1 (their boxes are dropped). No shared name at all is an
    error: the model was trained for other classes.
    """
    if list(model_names) == list(dataset_names) or not dataset_names:
        return None
    index = {n.lower(): i for i, n in enumerate(dataset_names)}
    mapping = np.array([index.get(n.lower(), -1) for n in model_names], dtype=np.int64)
    if (mapping < 0).all():
        raise XrayDetError(
            f"the model's classes {list(model_names)} share no name with the data set's {list(dataset_names)}"
        )
    if (mapping < 0).any():
        log.warning(
            "model classes not in the data set are ignored: %s",
            [n for n, m in zip(model_names, mapping, strict=True) if m < 0],
        )
    return mapping


def _remap(pred: Detections, mapping: np.ndarray | None) -> Detections:
    """Predictions in data set class ids; a class id the model does not have (an API's -1 for a name it
    does not know) is dropped, never wrapped round to the last class or an IndexError."""
    if mapping is None or len(pred) == 0:
        return pred
    known = (pred.class_id >= 0) & (pred.class_id < len(mapping))
    ids = np.full(len(pred), -1, dtype=np.int64)
    ids[known] = mapping[pred.class_id[known]]
    keep = ids >= 0
    return Detections(pred.xyxy[keep], ids[keep], None if pred.confidence is None else pred.confidence[keep])


def select_images(images: Sequence[Path], max_images: int | None, seed: int) -> list[Path]:
    """All images, or a seeded random sample of ``max_images`` of them (sorted, so runs line up)."""
    images = list(images)
    if max_images is None or max_images >= len(images):
        return images
    return sorted(random.Random(seed).sample(images, max_images))


def negative_images(folders: Sequence[str | Path]) -> list[Path]:
    """Every image of the given threat-free folders (labels there, if any, are ignored)."""
    found: list[Path] = []
    for folder in folders:
        ds = load_dataset(folder)
        for split in ds.splits:
            found.extend(ds.images(split))
    return sorted(set(found))


def predict_samples(
    predictor: Predictor,
    dataset: Dataset,
    images: Sequence[tuple[Path, str]],
    mapping: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Iterator[Sample]:
    """Predict each ``(image, source)`` once at :data:`EVAL_CONF` and yield it with its labels as a Sample."""
    for i, (path, source) in enumerate(images):
        rgb = load_rgb(path)
        h, w = rgb.shape[:2]
        pred = predictor.predict(rgb, conf=EVAL_CONF, iou=NMS_IOU).scored()
        pred = _remap(pred.sorted_by_confidence()[:MAX_DET], mapping)
        gt = dataset.labels(path, w, h) if source == DATASET else Detections.empty()
        if progress:
            progress(i + 1, len(images))
        yield Sample(path, w, h, gt, pred, source)


def prediction_record(index: int, sample: Sample, names: Sequence[str], conf: float) -> dict[str, Any]:
    """One line of ``predictions.jsonl``: the image, its labels and its boxes at the operating threshold."""

    def name(c: int) -> str:
        return names[c] if 0 <= c < len(names) else str(c)

    kept = sample.pred.with_min_confidence(conf)
    return {
        "id": f"{index:06d}",
        "image": str(sample.image),
        "source": sample.source,
        "width": sample.width,
        "height": sample.height,
        "gt": [
            {"class_id": c, "name": name(c), "xyxy": [round(float(v), 2) for v in box]}
            for box, c, _ in sample.gt
        ],
        "pred": [
            {
                "class_id": c,
                "name": name(c),
                "confidence": round(float(s or 0.0), 4),
                "xyxy": [round(float(v), 2) for v in box],
            }
            for box, c, s in kept
        ],
    }


def evaluate(
    model: str | Path | Predictor,
    dataset: str | Path | Dataset,
    *,
    split: str = "val",
    negatives: Sequence[str | Path] | None = None,
    conf: float = 0.25,
    out_dir: str | Path | None = None,
    max_images: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    imgsz: int | None = None,
    device: str = "cpu",
    tta: str = "off",
    target_detection: float = 0.95,
    latency_samples: int = 30,
    plots: bool = True,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate a detector as a screening checkpoint would; write a report folder when ``out_dir`` is given.

    Args:
        model: a ``.pt``/``.onnx`` file, a :class:`Predictor`, an ``http(s)://`` URL of the xraydet API, or a
            registry reference (``name``, ``name@champion``, ``name/3``...).
        dataset: a ``data.yaml`` (or a folder holding one) or a loaded :class:`Dataset`.
        split: the split to evaluate.
        negatives: folders of threat-free bags (first-class input for the false-alarm rate).
        conf: the operating threshold of the screening metrics, P/R, the confusion matrix and the review file.
        max_images: evaluate a seeded random sample of at most this many images of the split (and of the
            negatives).
        tta: test-time augmentation of a model file or predictor (:mod:`xraydet.inference.tta`); a served
            model uses the server's own, which the report records.
        target_detection: the detection rate the threshold sweep must reach.
        latency_samples: how many images the latency is timed on.

    Example:
        >>> report = evaluate("best.pt", "data/opixray/data.yaml", negatives=["negatives"])  # doctest: +SKIP
        >>> report.box.map50, report.screening.false_alarm_rate  # doctest: +SKIP
        (0.61, 0.05)
    """
    if not 0.0 < conf < 1.0:
        raise XrayDetError(f"conf must be between 0 and 1, got {conf}")
    from xraydet.inference import check_backend

    check_backend(backend)
    check_tta(tta)
    if out_dir is not None:  # refuse a wrong --out before the work, not after it
        check_output_dir(out_dir, (REPORT_JSON,), "evaluation report")
    started = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    weights = _weights_of(model)
    # A registry reference is resolved once: the file hashed is the file evaluated.
    target = weights if weights is not None and not isinstance(model, Predictor) else model
    predictor = resolve_predictor(target, backend=backend, imgsz=imgsz, device=device, tta=tta)
    # The evaluated bytes, so a report can be tied to a registered version (promote --candidate-report); an
    # API says what it serves.
    model_sha256 = sha256_file(weights) if weights is not None else getattr(predictor, "sha256", None)
    names = ds.names or list(predictor.names)
    mapping = class_mapping(list(predictor.names), ds.names)
    if mapping is None:  # the same classes: still drop ids outside them (see _remap)
        mapping = np.arange(len(predictor.names))
    threat_ids = ds.threat_ids
    if not threat_ids:
        log.warning("%s declares no threat classes: every class counts as a threat", ds.yaml_path or ds.root)
        threat_ids = set(range(len(names)))
    split_images = select_images(ds.images(split), max_images, seed)
    neg_images = select_images(negative_images(negatives or []), max_images, seed)
    if not split_images and not neg_images:
        raise XrayDetError(f"no images to evaluate in split '{split}' of {ds.yaml_path or ds.root}")
    todo = [(p, DATASET) for p in split_images] + [(p, NEGATIVES) for p in neg_images]

    group = EvaluatorGroup(
        [
            BoxEvaluator(names, conf),
            ScreeningEvaluator(names, threat_ids, conf),
            SweepEvaluator(threat_ids, target_detection),
        ]
    )
    records = []
    for i, sample in enumerate(predict_samples(predictor, ds, todo, mapping, progress)):
        group.process(sample)
        records.append(prediction_record(i, sample, names, conf))
    results = group.evaluate()
    timed = select_images(split_images or neg_images, latency_samples, seed + 1)
    latency = measure_latency(predictor, timed, conf=conf, iou=NMS_IOU)
    _check_same_model_served(model, predictor, model_sha256)  # after the latency too: it is timed on the API

    report = EvalReport(
        report_id=uuid.uuid4().hex[:12],
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        xraydet_version=__version__,
        model=_model_label(model, predictor),
        model_sha256=model_sha256,
        backend=getattr(predictor, "backend", type(predictor).__name__),
        dataset=str(ds.yaml_path or ds.root),
        split=split,
        # absolute, as the data set's path is: a promotion re-evaluates the champion on these folders, maybe
        # from another working directory
        negatives=[os.path.abspath(n) for n in negatives or []],
        names=names,
        threats=[names[i] for i in sorted(threat_ids)],
        conf=conf,
        eval_conf=EVAL_CONF,
        max_det=MAX_DET,
        imgsz=getattr(predictor, "imgsz", None),
        tta=predictor.tta,
        seed=seed,
        n_images=len(split_images),
        n_negative_images=len(neg_images),
        latency=LatencyStats.model_validate(latency),
        box=BoxMetrics.model_validate(results["box"]),
        screening=ScreeningMetrics.model_validate(results["screening"]),
        sweep=SweepResult.model_validate(results["sweep"]),
    )
    report.wall_time_s = round(time.perf_counter() - started, 2)
    if out_dir is not None:
        write_report_dir(report, records, Path(out_dir), plots=plots)
    return report


def _check_same_model_served(model: object, predictor: Predictor, sha256: str | None) -> None:
    """Refuse an evaluation through an API whose model was swapped mid-way: its figures mix two models."""
    from xraydet.inference.http_backend import HttpPredictor

    if not isinstance(predictor, HttpPredictor) or sha256 is None:
        return
    now = predictor.served_sha256()
    if now != sha256:
        raise XrayDetError(
            f"{model}: the served model changed during the evaluation (sha256 {sha256[:12]} -> "
            f"{(now or 'unknown')[:12]}), so the figures would mix two models; evaluate again"
        )


def _weights_of(model: str | Path | Predictor) -> Path | None:
    """The weights file evaluated: the file or registry reference given, or a predictor's own file; ``None``
    for a deployment URL or a predictor without a file."""
    if isinstance(model, Predictor):
        source = getattr(model, "source", None)
        if isinstance(source, str | Path) and not is_url(source) and Path(source).is_file():
            return Path(source)
        return None
    return None if is_url(model) else model_file(model)


def _model_label(model: str | Path | Predictor, predictor: Predictor) -> str:
    """What the report names as the model: the reference given (file, URL, registry name) or the source."""
    if isinstance(model, Predictor):
        return str(getattr(model, "source", type(model).__name__))
    return str(model)


def write_report_dir(
    report: EvalReport, records: list[dict[str, Any]], out_dir: Path, plots: bool = True
) -> Path:
    """Write the report folder atomically: report.json, report.md, predictions.jsonl and the plots.

    ``out_dir`` may be missing, an empty folder or an earlier report folder (which is replaced); anything else
    is refused.
    """
    check_output_dir(out_dir, (REPORT_JSON,), "evaluation report")
    if (out_dir / REPORT_JSON).exists():
        log.warning("replacing the existing report folder %s (its review verdicts go with it)", out_dir)
    with atomic_directory(out_dir, overwrite=True) as tmp:
        atomic_write_text(tmp / PREDICTIONS_JSONL, "".join(json.dumps(r) + "\n" for r in records))
        if plots:
            from xraydet.evaluation import plots as figures

            figures.plot_pr_curves(report.box, tmp / "pr_curves.png")
            figures.plot_ap_by_iou(report.box, tmp / "ap_by_iou.png")
            figures.plot_confusion(report.box, tmp / "confusion_matrix.png")
            figures.plot_sweep(report.sweep, tmp / "detection_vs_false_alarm.png", operating=report.conf)
            if records:
                figures.sample_grid(records, tmp / "sample_predictions.png", seed=report.seed)
            report.plots = sorted(p.name for p in tmp.glob("*.png"))
        atomic_write_json(tmp / REPORT_JSON, report.model_dump(mode="json"))
        atomic_write_text(tmp / REPORT_MD, render_markdown(report))
    log.info("report written to %s", out_dir)
    return out_dir
