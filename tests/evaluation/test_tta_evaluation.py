"""Evaluation with test-time augmentation: the report says it was used, it changes what is measured the way
the wrapped predictor does, comparisons carry it, and a served model is not augmented twice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xraydet.errors import ConfigError
from xraydet.evaluation import evaluate
from xraydet.evaluation.compare import compare_models, render_comparison
from xraydet.evaluation.report import load_report, render_markdown
from xraydet.inference import Predictor, load_predictor
from xraydet.inference.tta import TTAPredictor
from xraydet.structures import Detections


def tiny_data(tiny_model: Path) -> Path:
    """The data set the tiny model trained on (real scans when ../shared/data is there, else synth)."""
    return tiny_model.parents[2] / "data" / "data.yaml"


ARGS = {"max_images": 8, "latency_samples": 2, "plots": False}


def test_a_report_says_which_augmentation_made_it(onnx_model: Path, tiny_model: Path, tmp_path: Path):
    report = evaluate(onnx_model, tiny_data(tiny_model), tta="flips", out_dir=tmp_path / "flips", **ARGS)
    assert report.tta == "flips"
    saved = load_report(tmp_path / "flips")
    assert saved.tta == "flips"
    assert "test-time augmentation flips" in (tmp_path / "flips" / "report.md").read_text()
    # the same figures as evaluating the wrapped predictor itself: the option is that wrapper, nothing else
    wrapped = evaluate(TTAPredictor(load_predictor(onnx_model), "flips"), tiny_data(tiny_model), **ARGS)
    assert wrapped.tta == "flips"
    assert (wrapped.box.map50, wrapped.box.map50_95) == (report.box.map50, report.box.map50_95)
    plain = evaluate(onnx_model, tiny_data(tiny_model), **ARGS)
    assert plain.tta == "off" and "test-time augmentation" not in render_markdown(plain)


class CountingPredictor(Predictor):
    """The ONNX predictor, counting the images it is asked to predict."""

    def __init__(self, base: Predictor) -> None:
        self.base, self.calls = base, 0
        self.names, self.backend, self.imgsz, self.source = base.names, base.backend, base.imgsz, base.source

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        self.calls += 1
        return self.base.predict(image, conf, iou)


@pytest.mark.parametrize(("tta", "views"), [("hflip", 2), ("flips", 4)])
def test_every_scan_costs_one_model_call_per_view(onnx_model: Path, tiny_model: Path, tta: str, views: int):
    plain = CountingPredictor(load_predictor(onnx_model))
    augmented = CountingPredictor(load_predictor(onnx_model))
    evaluate(plain, tiny_data(tiny_model), **ARGS)
    report = evaluate(augmented, tiny_data(tiny_model), tta=tta, **ARGS)
    assert plain.calls > 0 and augmented.calls == views * plain.calls  # the scans and the latency samples
    assert report.tta == tta


def test_an_older_report_without_the_field_loads_as_off(label_report_dir: Path):
    file = label_report_dir / "report.json"
    data = json.loads(file.read_text())
    data.pop("tta", None)
    file.write_text(json.dumps(data))
    assert load_report(label_report_dir).tta == "off"


def test_a_served_model_is_not_augmented_again(tiny_model: Path):
    # refused before any connection: nothing listens on port 9
    with pytest.raises(ConfigError, match=r"--tta flips: http://127\.0\.0\.1:9 is a served model"):
        evaluate("http://127.0.0.1:9", tiny_data(tiny_model), tta="flips", **ARGS)
    with pytest.raises(ConfigError, match="--tta sideways: unknown test-time augmentation"):
        evaluate(tiny_model, tiny_data(tiny_model), tta="sideways", **ARGS)


def test_a_served_model_reports_the_servers_augmentation(onnx_model: Path, tiny_model: Path):
    """Through the API the report records what the server does; augmenting its answers again is refused,
    whether the model is given as a URL or as an HttpPredictor."""
    from tests.net import uvicorn_in_thread

    from xraydet.inference.http_backend import HttpPredictor
    from xraydet.serving.app import create_app
    from xraydet.serving.settings import ServeSettings

    app = create_app(ServeSettings(model=str(onnx_model), backend="onnx", tta="hflip", poll_s=0))
    with uvicorn_in_thread(app, "API", timeout_s=60) as url:
        report = evaluate(url, tiny_data(tiny_model), **ARGS)
        assert report.tta == "hflip"
        direct = evaluate(onnx_model, tiny_data(tiny_model), tta="hflip", **ARGS)
        assert report.box.map50 == pytest.approx(direct.box.map50)
        assert report.box.map50_95 == pytest.approx(direct.box.map50_95)
        with pytest.raises(ConfigError, match=f"--tta flips: {url} is a served model"):
            evaluate(HttpPredictor(url), tiny_data(tiny_model), tta="flips", **ARGS)


def test_a_comparison_row_names_its_augmentation(onnx_model: Path, tiny_model: Path, tmp_path: Path):
    cmp = compare_models([onnx_model], tiny_data(tiny_model), n=4, tta="hflip", out_dir=tmp_path / "cmp")
    assert [r.tta for r in cmp.rows] == ["hflip"]
    assert "onnx, TTA hflip" in render_comparison(cmp)
    # a served model in the list is refused before any model is evaluated, and nothing is written
    with pytest.raises(ConfigError, match=r"--tta hflip: http://127\.0\.0\.1:9 applies its server's own"):
        compare_models([onnx_model, "http://127.0.0.1:9"], tiny_data(tiny_model), n=4, tta="hflip",
                       out_dir=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_the_cli_takes_tta_and_refuses_an_unknown_one(onnx_model: Path, tiny_model: Path, tmp_path: Path):
    from xraydet.cli.main import app

    runner = CliRunner()
    out = tmp_path / "cli"
    ok = runner.invoke(app, ["eval", "run", str(onnx_model), str(tiny_data(tiny_model)), "--max-images", "3",
                             "--tta", "hflip", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert load_report(out).tta == "hflip"
    bad = runner.invoke(app, ["eval", "run", str(onnx_model), str(tiny_data(tiny_model)), "--tta", "rotate"],
                        terminal_width=200)
    assert bad.exit_code == 2 and "--tta" in bad.output and "rotate" in bad.output

