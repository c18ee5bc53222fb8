"""``xraydet serve``, ``xraydet export`` and ``xraydet api-test``: deploy a model and test a deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xraydet.cli.checks import onnx_file, output_file
from xraydet.cli.progress import stage_progress

console = Console()

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]  # uvicorn's


def serve(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="weights (.onnx/.pt) or a registry model name (served from its champion, followed live)",
    ),
    backend: str = typer.Option("auto", help="onnx | ultralytics | auto (ONNX Runtime on CPU)"),
    tta: str = typer.Option(
        "off",
        help="test-time augmentation: off | hflip | flips; flipped views of each scan, their boxes fused "
        "(2 or 4 model calls per scan)",
    ),
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
    api_key: str | None = typer.Option(
        None,
        envvar="XRAYDET_API_KEY",
        help="key for admin routes (X-API-Key header); without one they are disabled",
    ),
    max_upload_mb: float = typer.Option(10.0, help="largest accepted upload per image, MB"),
    max_pixels: int = typer.Option(40_000_000, help="largest accepted image, width x height"),
    max_batch_files: int = typer.Option(16, help="most images in one /v1/detect/batch request"),
    max_concurrent_inferences: int = typer.Option(
        1, min=1, help="model calls at once (queue the rest); raise it only with spare cores or a GPU"
    ),
    poll_s: float = typer.Option(30.0, help="check the model source this often for a new model (0: never)"),
    imgsz: int | None = typer.Option(None, min=32, help="inference size (default: the model's)"),
    threads: int | None = typer.Option(None, help="inference threads (default: all cores)"),
    device: str = typer.Option(
        "cpu",
        help="cpu, or a CUDA GPU such as 0 (ONNX Runtime: onnxruntime-gpu in place of onnxruntime); one "
        "not usable here is refused",
    ),
    threats: str | None = typer.Option(
        None, help="comma-separated threat class names (overrides the model's)"
    ),
    log_level: LogLevel = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve a detector over HTTP (FastAPI + uvicorn): /health, /v1/detect, /v1/detect/batch, /v1/models."""
    import uvicorn
    from pydantic import ValidationError

    from xraydet.config import validation_problems
    from xraydet.errors import ConfigError
    from xraydet.serving.app import create_app
    from xraydet.serving.settings import ServeSettings

    fields = {
        "model": model,
        "backend": backend,
        "tta": tta,
        "host": host,
        "port": port,
        "api_key": api_key,
        "max_upload_mb": max_upload_mb,
        "max_pixels": max_pixels,
        "max_batch_files": max_batch_files,
        "max_concurrent_inferences": max_concurrent_inferences,
        "poll_s": poll_s,
        "imgsz": imgsz,
        "threads": threads,
        "device": device,
        "threats": [t.strip() for t in threats.split(",") if t.strip()] if threats else None,
    }
    try:
        settings = ServeSettings.model_validate(fields)
    except ValidationError as err:
        raise ConfigError(f"invalid serve options: {validation_problems(err, as_flags=True)}") from err
    app = create_app(settings)
    # The first load happens here, not in uvicorn's startup, so a --threats typo ends the command with one
    # line (a ConfigError) instead of uvicorn's traceback.
    app.state.holder.start()
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def export(
    weights: Path = typer.Argument(..., help="Ultralytics .pt weights", exists=True, dir_okay=False),
    imgsz: int = typer.Option(640, min=32, help="input size baked into the ONNX graph"),
    out: Path | None = typer.Option(None, help="output .onnx file (default: beside the weights)"),
) -> None:
    """Export a .pt model to ONNX for the ONNX Runtime backend (with its threat classes in the metadata)."""
    from xraydet.inference.export import export_onnx

    onnx_file(out)
    path = export_onnx(weights, imgsz, out)
    console.print(f"[green]exported[/] {escape(str(path))}")


def api_test(
    api_url: str = typer.Option(..., help="base URL of a running xraydet (or seed-compatible) API"),
    dataset: Path = typer.Option(..., help="data.yaml or data set folder with labelled images"),
    conf_threshold: float = typer.Option(0.25, min=0, max=1, help="conf_threshold sent with each request"),
    split: str = typer.Option("val", help="split to sample from"),
    max_samples: int | None = typer.Option(None, min=1, help="random sample of this many images"),
    negatives: Path | None = typer.Option(None, help="folder of threat-free images (false-alarm rate)"),
    out: Path | None = typer.Option(None, help="write the results here as JSON"),
    seed: int = typer.Option(0, help="sampling seed"),
    timeout_s: float = typer.Option(60.0, min=0.1, help="per-request timeout in seconds"),
) -> None:
    """Test a deployed API on labelled scans (the seed's test_yolo_with_threshold, as a proper client)."""
    from xraydet.serving.api_client import run_api_test

    output_file(out)
    with stage_progress() as on_progress:
        report = run_api_test(
            api_url,
            dataset,
            conf_threshold,
            split=split,
            max_samples=max_samples,
            negatives=negatives,
            seed=seed,
            timeout_s=timeout_s,
            progress=on_progress,
        )
    _print_report(report)
    if out is not None:
        from xraydet.io import atomic_write_json

        atomic_write_json(out, report.model_dump(mode="json"))
        console.print(f"results saved to {escape(str(out))}")


def _print_report(report: object) -> None:
    from xraydet.serving.api_client import ApiTestReport

    assert isinstance(report, ApiTestReport)
    t = Table(
        title=f"API test: {report.api_url} (conf {report.conf_threshold}, model {report.model_version}"
        + (f", test-time augmentation {report.tta}" if report.tta not in (None, "off") else "")
        + ")"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("Images", str(report.n_images))
    t.add_row("Overall Accuracy", f"{report.accuracy:.1%}")
    t.add_row("Detection Rate", f"{report.detection_rate:.1%}")
    t.add_row("Avg Detections", f"{report.avg_detections:.2f}")
    t.add_row("Threats Found", f"{report.threats_found} / {report.n_threat_images}")
    if report.false_alarm_rate is not None:
        t.add_row(
            "False Alarms", f"{report.false_alarms} / {report.n_negatives} ({report.false_alarm_rate:.1%})"
        )
    t.add_row("Failed requests", str(report.n_failed))
    t.add_row("Duration", f"{report.duration_s:.1f} s")
    t.add_row("Images/s", f"{report.images_per_s:.2f}")
    console.print(t)
    top = Table(title="Top predicted classes")
    top.add_column("class")
    top.add_column("images", justify="right")
    for name, count in report.top_predicted_classes.items():
        top.add_row(name, str(count))
    console.print(top)
    per = Table(title="Per-class accuracy")
    for col in ("class", "correct", "total", "accuracy"):
        per.add_column(col, justify="right" if col != "class" else "left")
    for name, pc in report.per_class.items():
        per.add_row(name, str(pc.correct), str(pc.total), f"{pc.accuracy:.1%}")
    console.print(per)
    if report.errors:
        console.print(
            f"[yellow]{len(report.errors)} request errors[/], first: {json.dumps(report.errors[0])}"
        )


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``export`` and ``api-test`` to the root CLI."""
    app.command("serve")(serve)
    app.command("export")(export)
    app.command("api-test")(api_test)


if __name__ == "__main__":  # `python -m xraydet.cli.serve serve ...` runs these commands alone
    import logging
    import os
    import sys

    os.environ.setdefault("YOLO_OFFLINE", "true")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    register(_app)
    from xraydet.errors import XrayDetError

    try:
        _app()
    except (XrayDetError, FileNotFoundError) as _err:
        print(f"error: {_err}", file=sys.stderr)
        sys.exit(2)
