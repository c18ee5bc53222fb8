"""Fixtures of the evaluation tests: a small labelled folder with negatives and a real report folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.evaluation.cases import NAMES, THREATS

from xraydet.data.dataset import write_data_yaml


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)


def make_labelled_folder(tmp: Path) -> Path:
    """6 val images (knife, gun, bottle only, gun+knife, empty, knife) in ``tmp/ds``; 3 negatives in
    ``tmp/neg``."""
    root = tmp / "ds"
    labels = {
        "a": ["0 0.5 0.5 0.4 0.4"],
        "b": ["1 0.3 0.3 0.2 0.2"],
        "c": ["2 0.5 0.5 0.3 0.6"],
        "d": ["1 0.25 0.25 0.3 0.3", "0 0.75 0.75 0.3 0.3"],
        "e": [],
        "f": ["0 0.6 0.4 0.2 0.5"],
    }
    for i, (stem, rows) in enumerate(labels.items()):
        _image(root / "images" / "val" / f"{stem}.png", i)
        (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
        if rows:
            (root / "labels" / "val" / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    for i in range(3):
        _image(tmp / "neg" / f"n{i}.png", 100 + i)
    return write_data_yaml(root, NAMES, {"val": "images/val"}, THREATS)


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """The hand-made labelled folder (data.yaml path); its negatives are in ``tmp_path / "neg"``."""
    return make_labelled_folder(tmp_path)


@pytest.fixture(scope="session")
def real_report_dir(tiny_model: Path, opixray_yaml: Path, negatives_dir: Path, tmp_path_factory) -> Path:
    """A real report: the tiny model on 60 real OPIXray val scans and the 40 real threat-free bags."""
    from xraydet.evaluation import evaluate

    out = tmp_path_factory.mktemp("real_report") / "report"
    evaluate(
        tiny_model, opixray_yaml, negatives=[negatives_dir], max_images=60, out_dir=out, latency_samples=20
    )
    return out


@pytest.fixture(scope="session")
def trigger_happy_report_dir(
    trigger_happy_model: Path, opixray_yaml: Path, negatives_dir: Path, tmp_path_factory
) -> Path:
    """A real report with boxes kept: the trigger-happy model on all 350 real OPIXray val scans and the 40
    real threat-free bags (about 10 s; a few threats are found by position, every bag gets a threat box)."""
    from xraydet.evaluation import evaluate

    out = tmp_path_factory.mktemp("trigger_happy_report") / "report"
    evaluate(
        trigger_happy_model,
        opixray_yaml,
        negatives=[negatives_dir],
        out_dir=out,
        latency_samples=2,
        plots=False,
    )
    return out


@pytest.fixture
def report_copy(real_report_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the real report folder (tests that write verdicts or gate.json use it)."""
    return Path(shutil.copytree(real_report_dir, tmp_path / "report"))


@pytest.fixture(scope="session")
def _label_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.evaluation.cases import LabelPredictor

    from xraydet.evaluation import evaluate

    tmp = tmp_path_factory.mktemp("label_report")
    data = make_labelled_folder(tmp)
    predictor = LabelPredictor(data)
    predictor.register_negatives(tmp / "neg")
    out = tmp / "report"
    evaluate(predictor, data, negatives=[tmp / "neg"], out_dir=out, latency_samples=3)
    return out


@pytest.fixture
def label_report_dir(_label_report: Path, tmp_path: Path) -> Path:
    """A private copy of the label-reading predictor's report on the hand-made folder (runs anywhere)."""
    return Path(shutil.copytree(_label_report, tmp_path / "label_report"))
