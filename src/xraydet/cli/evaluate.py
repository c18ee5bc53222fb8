"""``xraydet eval`` (and ``eval compare``), ``xraydet gate`` and ``xraydet review``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from xraydet.cli.progress import progress
from xraydet.inference import TTA, Backend
from xraydet.inference.tta import VIEWS

console = Console()


class _DefaultRunGroup(TyperGroup):
    """Routes ``eval MODEL DATASET ...`` to ``run``; ``eval compare ...`` stays a subcommand."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_DefaultRunGroup,
    no_args_is_help=True,
    help="Evaluate a model as a screening checkpoint: `xraydet eval MODEL DATASET (options)` "
    "(same as `eval run`), or `xraydet eval compare MODEL1 MODEL2 ... --dataset D`.",
)


def default_report_dir(model: str, split: str, tta: str = "off") -> Path:
    """``eval_reports/<model>-<split>[-tta-<mode>]``, a name that tells references apart, safe as a folder.

    A model file gives its stem, a URL its host, port and path, a registry reference all of it. With
    test-time augmentation the mode is part of the name, so it does not replace the plain report (and its
    review).

    Example:
        >>> [default_report_dir(m, "val").name for m in ("runs/a/best.pt", "http://127.0.0.1:18811/", "xr/2",
        ...                                             "other/2", "xr@champion")]
        ['best-val', '127.0.0.1-18811-val', 'xr-2-val', 'other-2-val', 'xr-champion-val']
        >>> default_report_dir("runs/a/best.pt", "val", "flips").name
        'best-val-tta-flips'
    """
    text = model.strip().rstrip("/")
    if re.match(r"https?://", text):
        name = text.split("://", 1)[1]
    elif Path(text).suffix in {".pt", ".onnx"} or Path(text).is_file():
        name = Path(text).stem
    else:
        name = text

    def slug(part: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.]+", "-", part).strip("-.")[:80]

    suffix = "" if tta == "off" else f"-tta-{slug(tta)}"
    return Path("eval_reports") / f"{slug(name) or 'model'}-{slug(split) or 'split'}{suffix}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


@eval_app.command("run")
def eval_run(
    model: str = typer.Argument(
        ...,
        help="A .pt or .onnx file, a registry reference (name, name@champion, "
        "name/3) or an http(s):// URL of an xraydet API.",
    ),
    dataset: Path = typer.Argument(..., help="data.yaml, or a folder holding one."),
    split: str = typer.Option("val", help="Split to evaluate."),
    negatives: list[Path] = typer.Option([], "--negatives", help="Folder of threat-free bags (repeatable)."),
    conf: float = typer.Option(0.25, help="Operating threshold of the screening metrics (mAP uses 0.001)."),
    out: Path | None = typer.Option(
        None, "--out", help="Report folder \\[default: eval_reports/<model>-<split>]."
    ),
    max_images: int | None = typer.Option(
        None, "--max-images", min=1, help="Seeded sample of at most N images."
    ),
    backend: Backend = typer.Option("auto", help="Inference backend (auto: by the file's suffix)."),
    imgsz: int | None = typer.Option(None, min=32, help="Inference size \\[default: the model's]."),
    device: str = typer.Option(
        "cpu",
        help="cpu, or a CUDA GPU such as 0 (ONNX Runtime: onnxruntime-gpu in place of onnxruntime); one "
        "not usable here is refused.",
    ),
    tta: TTA = typer.Option(
        "off", help="Test-time augmentation: hflip (2 model calls per scan) or flips (4), boxes fused."
    ),
    target_detection: float = typer.Option(
        0.95, "--target-detection", min=0.0, max=1.0, help="Detection rate the sweep must reach."
    ),
    seed: int = typer.Option(0, help="Seed of the image sample and the plots."),
) -> None:
    """Evaluate MODEL on DATASET and write a report folder (report.json, report.md, predictions, plots)."""
    from xraydet.evaluation.report import format_number
    from xraydet.evaluation.runner import evaluate

    out = out or default_report_dir(model, split, tta)
    with progress("predicting") as update:
        report = evaluate(
            model,
            dataset,
            split=split,
            negatives=negatives,
            conf=conf,
            out_dir=out,
            max_images=max_images,
            seed=seed,
            backend=backend,
            imgsz=imgsz,
            device=device,
            tta=tta,
            target_detection=target_detection,
            progress=update,
        )
    b, s, lat = report.box, report.screening, report.latency
    table = Table(
        title=escape(f"{report.model_name}: {report.n_images} + {report.n_negative_images}")
        + " threat-free images"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in [
        (
            "mAP50 / mAP75 / mAP50-95",
            f"{format_number(b.map50)} / {format_number(b.map75)} / {format_number(b.map50_95)}",
        ),
        (f"precision / recall @ {report.conf}", f"{format_number(b.precision)} / {format_number(b.recall)}"),
        ("threat detection rate", f"{_pct(s.threat_detection_rate)} ({s.threats_found}/{s.n_threat_bags})"),
        ("any threat box in the bag", _pct(s.threat_detection_rate_any)),
        ("false-alarm rate", f"{_pct(s.false_alarm_rate)} ({s.false_alarms}/{s.n_threat_free_bags})"),
        (s.accuracy_label, _pct(s.accuracy)),
        ("avg detections per image", f"{s.avg_detections:.2f}"),
        (
            f"threshold for {report.sweep.target_detection:.0%} detection",
            "none"
            if report.sweep.recommended_threshold is None
            else f"{report.sweep.recommended_threshold:.2f}",
        ),
        (
            "latency p50 / p95",
            f"{lat.p50_ms or 0:.1f} / {lat.p95_ms or 0:.1f} ms ({lat.backend}, {lat.device}"
            + ("" if report.tta == "off" else f", TTA {report.tta}: {len(VIEWS[report.tta])} calls per scan")
            + ")",
        ),
    ]:
        table.add_row(name, value)
    console.print(table)
    console.print(f"report: {escape(str(out / 'report.md'))}")


@eval_app.command("compare")
def eval_compare(
    models: list[str] = typer.Argument(..., help="Model files, registry references or http(s):// API URLs."),
    dataset: Path = typer.Option(..., "--dataset", help="data.yaml, or a folder holding one."),
    n: int = typer.Option(50, "--n", min=1, help="Number of sampled images (the same for every model)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    split: str = typer.Option("val", help="Split to sample from."),
    conf: float = typer.Option(0.25, help="Operating threshold."),
    negatives: list[Path] = typer.Option([], "--negatives", help="Folder of threat-free bags (repeatable)."),
    out: Path = typer.Option(Path("eval_reports/comparison"), "--out", help="Output folder."),
    backend: Backend = typer.Option("auto", help="Inference backend for model files (auto: by suffix)."),
    imgsz: int | None = typer.Option(None, min=32, help="Inference size \\[default: each model's]."),
    tta: TTA = typer.Option("off", help="Test-time augmentation of model files: hflip or flips."),
) -> None:
    """Run several models on the same N sampled images and write comparison.md / comparison.json."""
    from xraydet.evaluation.compare import compare_models, render_comparison

    cmp = compare_models(
        models,
        dataset,
        n=n,
        seed=seed,
        split=split,
        conf=conf,
        negatives=negatives,
        out_dir=out,
        backend=backend,
        imgsz=imgsz,
        tta=tta,
    )
    console.print(render_comparison(cmp))
    console.print(f"comparison: {escape(str(out / 'comparison.md'))}")


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    if "ms" in name:
        return f"{value:.1f}"
    if "reviewed" in name:
        return f"{value:.0f}"
    return f"{value:.3f}"


def gate(
    report_dir: Path = typer.Argument(
        ..., help="Report folder written by `xraydet eval`, or its report.json."
    ),
    policy: Path | None = typer.Option(None, "--policy", help="Policy YAML \\[default: the seed's policy]."),
    review_dir: Path | None = typer.Option(
        None,
        "--review-dir",
        exists=True,
        file_okay=False,
        help="Review folder \\[default: REPORT_DIR/review].",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a table."),
) -> None:
    """Check a report against the production readiness policy; exit 0 only when every criterion passes."""
    from xraydet.evaluation.gate import check_gate, load_policy
    from xraydet.evaluation.report import report_folder
    from xraydet.io import atomic_write_json

    result = check_gate(report_dir, load_policy(policy) if policy else None, review_dir)
    # beside the report: in its folder, also when REPORT_DIR names the report.json in it
    atomic_write_json(report_folder(report_dir) / "gate.json", result.model_dump(mode="json"))
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        # one line per criterion: in a pipe or log (no terminal) use a wide console rather than wrap rows
        out = Console()
        out = out if out.is_terminal else Console(width=160)
        table = Table(title=f"Production readiness gate: {escape(str(report_dir))}")
        for col in ("result", "criterion", "measured", "limit"):
            table.add_column(col, no_wrap=True)
        table.add_column("detail")
        for c in result.criteria:
            verdict = "[yellow]SKIP[/]" if c.skipped else "[green]PASS[/]" if c.passed else "[red]FAIL[/]"
            limit = "off" if c.limit is None else f"{c.op} {_fmt(c.name, c.limit)}"
            table.add_row(verdict, c.name, _fmt(c.name, c.value), limit, escape(c.detail))
        out.print(table)
        out.print("[bold green]GATE PASSED[/]" if result.passed else "[bold red]GATE FAILED[/]")
    if not result.passed:
        raise typer.Exit(1)


def review(
    report_dir: Path = typer.Argument(..., help="Report folder written by `xraydet eval`."),
    n: int = typer.Option(100, "--n", min=1, help="Number of random predictions to review."),
    seed: int = typer.Option(0, help="Sampling seed."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, min=1, max=65535, help="Port to listen on."),
) -> None:
    """Serve a page to review N random predictions (keys c / w / m, arrows); verdicts feed `xraydet gate`."""
    from xraydet.evaluation.review.server import serve

    def banner() -> None:  # printed once the report has loaded: a bad REPORT_DIR gets only its error
        console.print(
            f"review {n} predictions of {escape(str(report_dir))} at http://{host}:{port}/ (Ctrl+C to stop; "
            "every verdict is saved as it is made)"
        )

    serve(report_dir, n=n, seed=seed, host=host, port=port, on_ready=banner)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
    app.command("gate")(gate)
    app.command("review")(review)
