"""`xraydet api-test` and `HttpPredictor` against the live server, checked against the in-process model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.net import free_port

from xraydet.inference.base import load_rgb
from xraydet.inference.onnx_backend import OnnxPredictor

from .conftest import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

CONF = 0.001  # the 2-epoch model scores about 0.003: a low threshold gives boxes to count


def test_api_test_summary_matches_the_model(
    live_server: LiveServer, onnx_model: Path, opixray_yaml: Path, negatives_dir: Path
) -> None:
    from xraydet.data.dataset import label_path_for, load_dataset, read_label_file
    from xraydet.serving.api_client import run_api_test

    report = run_api_test(live_server.url, opixray_yaml, CONF, max_samples=8, negatives=negatives_dir, seed=3)
    ds = load_dataset(opixray_yaml)
    sampled = sorted(__import__("random").Random(3).sample(ds.images("val"), 8))
    local = OnnxPredictor(onnx_model, threads=1)
    correct = detected = items = 0
    for image in sampled:
        dets = local.predict(load_rgb(image), CONF, 0.7).sorted_by_confidence()
        first = int(read_label_file(label_path_for(image))[0, 0])
        items += len(dets)
        detected += len(dets) > 0
        correct += len(dets) > 0 and int(dets.class_id[0]) == first
    assert report.n_images == 8 and report.n_failed == 0
    assert report.accuracy == pytest.approx(correct / 8)
    assert report.detection_rate == pytest.approx(detected / 8)
    assert report.avg_detections == pytest.approx(items / 8)
    assert report.n_threat_images == 8  # every OPIXray class is a threat, one box per image
    assert sum(pc.total for pc in report.per_class.values()) == 8
    assert report.n_negatives == len(load_dataset(negatives_dir).images("val"))
    negatives_flagged = sum(
        len(local.predict(load_rgb(p), CONF, 0.7)) > 0 for p in load_dataset(negatives_dir).images("val")
    )
    assert report.false_alarms == negatives_flagged
    assert report.false_alarm_rate == pytest.approx(negatives_flagged / report.n_negatives)


def test_api_test_cli_writes_json(live_server: LiveServer, opixray_yaml: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from xraydet.cli import serve

    app = typer.Typer()
    serve.register(app)
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        app,
        [
            "api-test",
            "--api-url",
            live_server.url,
            "--dataset",
            str(opixray_yaml),
            "--conf-threshold",
            str(CONF),
            "--max-samples",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Overall Accuracy" in result.output and "Detection Rate" in result.output
    saved = json.loads(out.read_text())
    assert saved["n_images"] == 3 and saved["conf_threshold"] == CONF


def test_api_test_says_clearly_when_the_api_is_down(opixray_yaml: Path) -> None:
    from xraydet.serving.api_client import ApiError, run_api_test

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiError, match="not reachable"):
        run_api_test(url, opixray_yaml, 0.25, max_samples=2)


def test_http_predictor_returns_what_the_model_returns(
    live_server: LiveServer, onnx_model: Path, val_images: list[Path]
) -> None:
    from xraydet.inference.http_backend import HttpPredictor

    remote = HttpPredictor(live_server.url)
    local = OnnxPredictor(onnx_model, threads=1)
    assert remote.names == local.names and remote.imgsz == 160
    for path in val_images[:2]:
        image = load_rgb(path)
        a = remote.predict(image, CONF, 0.7)
        b = local.predict(image, CONF, 0.7).sorted_by_confidence()
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.01)
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
    remote.close()


def test_the_api_names_the_sha256_of_the_weights_it_serves(live_server: LiveServer, onnx_model: Path) -> None:
    from xraydet.inference.http_backend import HttpPredictor
    from xraydet.io import sha256_file

    remote = HttpPredictor(live_server.url)
    assert remote.sha256 == remote.served_sha256() == sha256_file(onnx_model)
    remote.close()


def test_an_http_predictor_keeps_its_url_whole_in_the_evaluation_report(
    live_server: LiveServer, opixray_yaml: Path, tmp_path: Path
) -> None:
    from xraydet.evaluation import evaluate
    from xraydet.evaluation.report import REPORT_MD, load_report
    from xraydet.inference.http_backend import HttpPredictor

    remote = HttpPredictor(live_server.url)
    assert remote.source == live_server.url
    out = tmp_path / "report"
    evaluate(remote, opixray_yaml, out_dir=out, max_images=2, latency_samples=1, plots=False)
    remote.close()
    assert load_report(out).model == live_server.url
    markdown = (out / REPORT_MD).read_text()
    assert f"# Evaluation of `{live_server.url}`" in markdown
    assert f"- model: `{live_server.url}`" in markdown


def test_an_evaluation_through_the_api_is_tied_to_the_served_model_and_refused_if_it_changes(
    server_factory, onnx_model: Path, second_onnx_model: Path, opixray_yaml: Path, tmp_path: Path
) -> None:
    import os
    import shutil

    import httpx

    from xraydet.errors import XrayDetError
    from xraydet.evaluation import evaluate
    from xraydet.io import sha256_file

    served = tmp_path / "served.onnx"
    shutil.copy2(onnx_model, served)
    server = server_factory(served, "--api-key", "swap-key", "--poll-s", "0")
    report = evaluate(server.url, opixray_yaml, max_images=3, latency_samples=1, plots=False)
    assert report.model_sha256 == sha256_file(onnx_model)

    def swap_after_the_first_scan(done: int, total: int) -> None:
        if done == 1:  # a new model lands mid-evaluation: replaced atomically, then reloaded
            staged = tmp_path / "staged.onnx"
            shutil.copy2(second_onnx_model, staged)
            os.replace(staged, served)
            reply = httpx.post(f"{server.url}/v1/admin/reload", headers={"X-API-Key": "swap-key"}, timeout=60)
            assert reply.json()["changed"] is True

    with pytest.raises(XrayDetError, match="served model changed during the evaluation"):
        evaluate(
            server.url, opixray_yaml, max_images=3, latency_samples=1, plots=False,
            progress=swap_after_the_first_scan,
        )
