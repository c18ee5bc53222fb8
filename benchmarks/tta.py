"""What test-time augmentation buys and costs: a model evaluated with ``--tta off``, ``hflip`` and ``flips``.

Each mode is a full ``xraydet eval run`` on the same images (the split, plus threat-free bags for the false
alarms): mAP50 / mAP75 / mAP50-95, screening figures at the operating threshold and at the threshold that
reaches 95% detection, and latency through the same backend, side by side in one run. The fusion settings
are fixed (weighted box fusion at IoU 0.55, the published default), not tuned: run it on the *train* split as
well, where a gain that holds is not an artefact of the dev val split.

Usage::

    python benchmarks/tta.py WEIGHTS ../shared/data/opixray --split val \
        --negatives ../shared/data/negatives/sixray-normal --imgsz 640 --backend onnx \
        --out benchmarks/results/tta-run-e --plot docs/benchmarks/tta-run-e.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "true")

from xraydet.evaluation.report import EvalReport, format_number, load_report
from xraydet.evaluation.runner import evaluate
from xraydet.inference.tta import TTA_MODES, VIEWS
from xraydet.io import atomic_write_json


def summary(report: EvalReport) -> dict[str, Any]:
    """The figures of one mode."""
    b, s, w, lat = report.box, report.screening, report.sweep, report.latency
    return {
        "tta": report.tta,
        "model_calls_per_scan": len(VIEWS[report.tta]),
        "n_images": report.n_images,
        "n_negative_images": report.n_negative_images,
        "map50": b.map50,
        "map75": b.map75,
        "map50_95": b.map50_95,
        "per_class_ap50_95": b.per_class_ap50_95,
        "threat_detection_rate": s.threat_detection_rate,
        "false_alarm_rate": s.false_alarm_rate,
        "accuracy": s.accuracy,
        "threshold_for_target": w.recommended_threshold,
        "false_alarm_rate_at_target": w.recommended.false_alarm_rate if w.recommended else None,
        "target_detection": w.target_detection,
        "latency_p50_ms": lat.p50_ms,
        "latency_p95_ms": lat.p95_ms,
        "backend": report.backend,
        "imgsz": report.imgsz,
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per mode; gains against the first (``off``) row."""
    base = rows[0]
    head = (
        "| TTA | model calls | mAP50 | mAP75 | mAP50-95 | detection @ op. threshold | false alarms | "
        "false alarms at 95% detection | latency p50 / p95 ms |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        gains = "" if r is base else (
            f" ({r['map50'] - base['map50']:+.3f} / {r['map75'] - base['map75']:+.3f} / "
            f"{r['map50_95'] - base['map50_95']:+.3f})"
        )
        lines.append(
            f"| {r['tta']} | {r['model_calls_per_scan']} | {r['map50']:.3f} | {format_number(r['map75'])} | "
            f"{r['map50_95']:.3f}{gains} | {_pct(r['threat_detection_rate'])} | "
            f"{_pct(r['false_alarm_rate'])} | "
            f"{_pct(r['false_alarm_rate_at_target'])} | {format_number(r['latency_p50_ms'], 0)} / "
            f"{format_number(r['latency_p95_ms'], 0)} |"
        )
    return "\n".join(lines)


def plot_modes(reports: list[EvalReport], path: Path) -> Path:
    """Left: mean AP by IoU threshold, one line per mode. Right: detection vs false alarms over thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in reports:
        label = f"{r.tta} ({len(VIEWS[r.tta])} call{'s' if len(VIEWS[r.tta]) > 1 else ''})"
        mean = r.box.mean_ap_by_iou()
        if mean:
            ax1.plot(r.box.iou_thresholds, mean, marker=".", label=f"{label}: mAP50-95 {r.box.map50_95:.3f}")
        pts = [p for p in r.sweep.points if p.detection_rate is not None and p.false_alarm_rate is not None]
        ax2.plot([p.false_alarm_rate for p in pts], [p.detection_rate for p in pts], marker=".", markersize=3,
                 label=label)
    ax1.set(xlabel="IoU threshold", ylabel="mean AP", xlim=(0.48, 0.97), ylim=(0, 1.02),
            title="AP by IoU threshold")
    ax2.set(xlabel="false-alarm rate (threat-free bags)", ylabel="threat detection rate", xlim=(-0.02, 1.02),
            ylim=(0.5, 1.01), title="Detection vs false alarms, thresholds 0.05-0.95")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left" if ax is ax1 else "lower right")
    title = f"Test-time augmentation: {Path(reports[0].model).name}, {reports[0].split} split"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("weights", help=".pt or .onnx")
    parser.add_argument("dataset", help="data.yaml or its folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--negatives", action="append", default=[], help="threat-free folder (repeatable)")
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--modes", nargs="+", default=list(TTA_MODES), choices=TTA_MODES)
    parser.add_argument("--max-images", type=int, default=None, help="seeded sample of the split")
    parser.add_argument("--latency-samples", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True, help="folder: summary JSON + one report per mode")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of AP by IoU and detection vs alarms")
    parser.add_argument("--plot-only", action="store_true", help="redraw --plot from the reports in --out")
    args = parser.parse_args(argv)
    if args.plot_only:
        if args.plot is None:
            parser.error("--plot-only needs --plot")
        plot_modes([load_report(args.out / f"{args.split}-{m}") for m in args.modes], args.plot)
        return {}

    rows, reports = [], []
    for mode in args.modes:
        print(f"evaluating with --tta {mode} ...", flush=True)
        report = evaluate(
            args.weights,
            args.dataset,
            split=args.split,
            negatives=args.negatives or None,
            imgsz=args.imgsz,
            backend=args.backend,
            tta=mode,
            max_images=args.max_images,
            latency_samples=args.latency_samples,
            out_dir=args.out / f"{args.split}-{mode}",
            plots=False,
        )
        rows.append(summary(report))
        reports.append(report)
    if args.plot is not None:
        plot_modes(reports, args.plot)
    result = {"weights": str(args.weights), "dataset": str(args.dataset), "split": args.split, "modes": rows}
    atomic_write_json(args.out / f"tta-{args.split}.json", result)
    print(markdown_table(rows))
    return result


if __name__ == "__main__":
    main()
