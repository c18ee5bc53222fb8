"""The commands through the real CLI app: `eval MODEL DATASET` (default route), `eval compare`, including a
running xraydet API as one of the compared models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.net import uvicorn_in_thread
from typer.testing import CliRunner

from xraydet.evaluation.report import load_report


def _app():
    from xraydet.cli.main import app

    return app


def test_eval_default_route_and_run_are_the_same_command(labelled_folder: Path, tmp_path: Path):
    runner = CliRunner()
    help_text = runner.invoke(_app(), ["eval", "--help"]).output
    assert "compare" in help_text and "run" in help_text
    # a model name that is no file and no registry entry: the error names it, whichever spelling
    for args in (
        ["eval", str(tmp_path / "nope.pt"), str(labelled_folder)],
        ["eval", "run", str(tmp_path / "nope.pt"), str(labelled_folder)],
    ):
        result = runner.invoke(_app(), args)
        assert result.exit_code != 0
        assert "nope.pt" in str(result.exception)


def test_review_and_gate_commands_are_registered():
    runner = CliRunner()
    review = runner.invoke(_app(), ["review", "--help"], terminal_width=200)
    assert review.exit_code == 0 and "--n" in review.output and "--port" in review.output
    gate = runner.invoke(_app(), ["gate", "--help"], terminal_width=200)
    assert gate.exit_code == 0 and "--policy" in gate.output


@pytest.mark.realdata
@pytest.mark.slow
def test_eval_command_writes_a_report(
    tiny_model: Path, opixray_yaml: Path, negatives_dir: Path, tmp_path: Path
):
    out = tmp_path / "rep"
    result = CliRunner().invoke(
        _app(),
        [
            "eval",
            str(tiny_model),
            str(opixray_yaml),
            "--negatives",
            str(negatives_dir),
            "--max-images",
            "12",
            "--out",
            str(out),
            "--conf",
            "0.3",
            "--target-detection",
            "0.9",
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    report = load_report(out)
    assert (report.conf, report.n_images, report.n_negative_images) == (0.3, 12, 12)
    assert report.sweep.target_detection == 0.9
    assert "mAP75" in result.output and "false-alarm rate" in result.output
    assert {"report.json", "report.md", "predictions.jsonl"} <= {p.name for p in out.iterdir()}


@pytest.fixture
def api_url(tiny_model: Path) -> Iterator[str]:
    """The real xraydet API serving the tiny model under uvicorn on a loopback port."""
    from xraydet.serving.app import create_app
    from xraydet.serving.settings import ServeSettings

    app = create_app(ServeSettings(model=str(tiny_model), backend="ultralytics", poll_s=0))
    with uvicorn_in_thread(app, "API", timeout_s=60) as url:
        yield url


@pytest.mark.realdata
@pytest.mark.slow
def test_compare_file_and_http_endpoint_on_same_images(
    tiny_model, opixray_yaml, negatives_dir, api_url, tmp_path
):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        _app(),
        [
            "eval",
            "compare",
            str(tiny_model),
            api_url,
            "--dataset",
            str(opixray_yaml),
            "--n",
            "8",
            "--seed",
            "5",
            "--negatives",
            str(negatives_dir),
            "--out",
            str(out),
        ],
        terminal_width=250,
    )
    assert result.exit_code == 0, result.output
    cmp = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in cmp["rows"]] == [str(tiny_model), api_url]
    local, http = cmp["rows"]
    assert http["backend"] == "http" and local["backend"] == "ultralytics"
    assert local["n_images"] == http["n_images"] == 8
    # same weights behind both: the same images give the same numbers (PNG upload is lossless)
    for key in ("threats_found", "n_threat_bags", "avg_detections", "false_alarm_rate", "accuracy"):
        assert local[key] == http[key], key
    assert abs(local["map50"] - http["map50"]) < 0.01
    reports = [load_report(r["report_dir"]) for r in cmp["rows"]]
    images = [
        [
            json.loads(x)["image"]
            for x in (Path(r["report_dir"]) / "predictions.jsonl").read_text().splitlines()
        ]
        for r in cmp["rows"]
    ]
    assert images[0] == images[1] and reports[0].seed == reports[1].seed == 5
    md = (out / "comparison.md").read_text()
    assert md.count("\n| `") == 2 and "seed accuracy" in md
