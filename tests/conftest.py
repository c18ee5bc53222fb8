"""Shared fixtures. Real data is read from ../shared/data (or $XRAYDET_SHARED_DATA); tests that need it skip
cleanly when it is absent. Nothing is ever written there: training fixtures work on temp copies."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
# Ultralytics keeps a settings file; point it at a temp folder so tests never touch the user's, and switch off
# its own MLflow/TensorBoard loggers (xraydet records runs itself).
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="xraydet-yolo-cfg-"))
from ultralytics.utils import SETTINGS

_LOGGERS = ("mlflow", "tensorboard", "wandb", "clearml", "comet", "dvc", "neptune", "raytune")
SETTINGS.update({k: False for k in _LOGGERS if k in SETTINGS})

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("XRAYDET_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "opixray" / "data.yaml").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def opixray_yaml(shared_data: Path) -> Path:
    """The real OPIXray dev set's data.yaml (read-only: never train on it in place)."""
    return shared_data / "opixray" / "data.yaml"


@pytest.fixture(scope="session")
def negatives_dir(shared_data: Path) -> Path:
    """A folder of threat-free SIXray bags (no labels)."""
    path = shared_data / "negatives" / "sixray-normal"
    if not path.is_dir():
        pytest.skip(f"negatives not found at {path}")
    return path


def copy_subset(src_yaml: Path, dest: Path, n_train: int, n_val: int) -> Path:
    """Copy the first ``n_train``/``n_val`` images (and labels) of a YOLO data set into ``dest``."""
    from xraydet.data.dataset import label_path_for, load_dataset, write_data_yaml

    ds = load_dataset(src_yaml)
    for split, n in (("train", n_train), ("val", n_val)):
        for image in ds.images(split)[:n]:
            (dest / "images" / split).mkdir(parents=True, exist_ok=True)
            (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, dest / "images" / split / image.name)
            label = label_path_for(image)
            if label.exists():
                shutil.copy2(label, dest / "labels" / split / label.name)
    return write_data_yaml(dest, ds.names, {"train": "images/train", "val": "images/val"}, ds.threats)


@pytest.fixture(scope="session")
def opixray_small(opixray_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temp copy of 64 train + 32 val real scans, safe to train on."""
    return copy_subset(opixray_yaml, tmp_path_factory.mktemp("opixray_small"), 64, 32)


@pytest.fixture(scope="session")
def synth_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic X-ray data set (runs anywhere): 48 train + 24 val images of 160 px."""
    from xraydet.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "synth"
    generate(SynthConfig(n_train=48, n_val=24, imgsz=160, seed=0), out)
    return out / "data.yaml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolov8n trained from YAML for 2 epochs at 160 px: weak, but a real model to evaluate and serve.

    Trained on real scans when available, else on synth data.
    """
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("tiny_model")
    if (SHARED_DATA / "opixray" / "data.yaml").is_file():
        data = copy_subset(SHARED_DATA / "opixray" / "data.yaml", root / "data", 64, 32)
    else:
        from xraydet.data.synth import SynthConfig, generate

        generate(SynthConfig(n_train=48, n_val=24, imgsz=160, seed=0), root / "data")
        data = root / "data" / "data.yaml"
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(data),
        epochs=2,
        imgsz=160,
        batch=16,
        device="cpu",
        workers=0,
        project=str(root),
        name="run",
        exist_ok=True,
        plots=False,
        verbose=False,
        seed=0,
    )
    return root / "run" / "weights" / "best.pt"


@pytest.fixture(scope="session")
def onnx_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_model` exported at 160 px; the export works on a copy in a temp folder."""
    from xraydet.inference.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    pt = folder / "tiny.pt"
    shutil.copy2(tiny_model, pt)
    return export_onnx(pt, 160)


@pytest.fixture(scope="session")
def trigger_happy_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every class logit pushed up: it reports threats everywhere, threat-free bags too.

    A real, loadable and clearly worse detector (a false-alarm rate of 1 on threat-free bags), built without
    training: the bias of the last classification conv of each detection scale is set to +8.
    """
    from tests.model_edits import trigger_happy_copy

    return trigger_happy_copy(tiny_model, tmp_path_factory.mktemp("trigger_happy") / "trigger_happy.pt")
