"""``device`` and ``imgsz`` reach the backends: a device they cannot use and a size a fixed-size ONNX model
cannot run at are refused by name, not quietly replaced by the CPU or the model's own size."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from xraydet.errors import ConfigError
from xraydet.inference import UnusableSetting, load_predictor
from xraydet.inference.onnx_backend import execution_providers

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
WITH_CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="session")
def dynamic_onnx_model(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with dynamic input axes (Ultralytics' ``dynamic=True``), made on a copy."""
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("dynamic")
    pt = folder / "tiny_dynamic.pt"
    shutil.copy2(onnx_model.with_suffix(".pt"), pt)
    return Path(YOLO(str(pt), task="detect").export(format="onnx", imgsz=160, dynamic=True, verbose=False))


def scan() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)


@pytest.mark.parametrize("device", ["bogus", "gpu", "mps", "0,1", "cuda:x"])
def test_the_onnx_backend_refuses_a_device_it_cannot_use(onnx_model: Path, device: str) -> None:
    with pytest.raises(UnusableSetting, match=f"--device {device}: not a device the onnx backend can use"):
        load_predictor(onnx_model, backend="onnx", device=device)


def test_a_wrong_device_is_refused_before_a_pt_is_exported(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XRAYDET_CACHE_DIR", str(tmp_path))
    with pytest.raises(UnusableSetting, match="--device bogus"):
        load_predictor(tiny_model, backend="onnx", device="bogus")
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize("device", ["bogus", "cuda:7"])
def test_the_ultralytics_backend_refuses_a_device_it_cannot_use(onnx_model: Path, device: str) -> None:
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a CUDA GPU 7")
    with pytest.raises(UnusableSetting, match=f"--device {device}: not usable here"):
        load_predictor(onnx_model, backend="ultralytics", device=device)


@pytest.mark.parametrize("device", ["0", "cuda", "cuda:0", 0])
def test_a_gpu_the_onnx_backend_cannot_reach_is_refused_not_run_on_the_cpu(
    onnx_model: Path, device: str | int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: CPU_ONLY)
    with pytest.raises(UnusableSetting) as err:
        load_predictor(onnx_model, backend="onnx", device=str(device))
    assert f"--device {device}: this onnxruntime has no CUDA provider" in str(err.value)
    assert "--device cpu" in str(err.value)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="a real CUDA build would start CUDA: this checks the fallback of a CPU-only one",
)
def test_a_cuda_provider_that_falls_back_to_the_cpu_is_refused(
    onnx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime listed with CUDA but unable to start it (here: a CPU-only build) runs on the CPU with a
    log line; the backend checks the providers the session really got."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: WITH_CUDA)
    with pytest.raises(UnusableSetting, match="--device cuda:0: ONNX Runtime could not start CUDA"):
        load_predictor(onnx_model, backend="onnx", device="cuda:0")


@pytest.mark.parametrize(
    ("device", "label", "device_id"),
    [("cuda", "cuda:0", 0), ("CUDA:1", "cuda:1", 1), ("2", "cuda:2", 2), (" 3 ", "cuda:3", 3)],
)
def test_cuda_devices_map_to_the_cuda_provider_on_that_gpu(
    device: str, label: str, device_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: WITH_CUDA)
    assert execution_providers(device) == (
        label,
        [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"],
    )


def test_the_onnx_backend_on_the_cpu_says_so(onnx_model: Path) -> None:
    predictor = load_predictor(onnx_model, backend="onnx", device="CPU")
    assert predictor.device == "cpu"  # type: ignore[attr-defined]
    assert predictor.session.get_providers() == ["CPUExecutionProvider"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["onnx", "ultralytics"])
def test_a_fixed_size_model_refuses_another_imgsz(onnx_model: Path, backend: str) -> None:
    with pytest.raises(UnusableSetting) as err:
        load_predictor(onnx_model, backend=backend, imgsz=320)
    assert isinstance(err.value, ConfigError)
    assert f"--imgsz 320: {onnx_model} has a fixed 160x160 input" in str(err.value)
    assert "leave --imgsz out to run it at 160" in str(err.value)


@pytest.mark.parametrize("backend", ["onnx", "ultralytics"])
@pytest.mark.parametrize("imgsz", [None, 160, 150])
def test_a_fixed_size_model_runs_at_its_size_or_one_rounding_up_to_it(
    onnx_model: Path, backend: str, imgsz: int | None
) -> None:
    """150 is what an export at ``--imgsz 150`` makes of it: 160, Ultralytics' multiple of the stride."""
    predictor = load_predictor(onnx_model, backend=backend, imgsz=imgsz)
    assert predictor.imgsz == 160
    predictor.predict(scan(), conf=0.001)


@pytest.mark.parametrize("backend", ["onnx", "ultralytics"])
def test_a_dynamic_model_runs_at_the_imgsz_asked(dynamic_onnx_model: Path, backend: str) -> None:
    predictor = load_predictor(dynamic_onnx_model, backend=backend, imgsz=320)
    assert predictor.imgsz == 320
    predictor.predict(scan(), conf=0.001)


def test_a_dynamic_model_rounds_imgsz_up_to_its_stride(
    dynamic_onnx_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At 150 the graph's upsampled and skip branches no longer line up: every scan failed in ONNX Runtime."""
    with caplog.at_level(logging.WARNING, logger="xraydet.inference.onnx_backend"):
        predictor = load_predictor(dynamic_onnx_model, backend="onnx", imgsz=150)
    assert predictor.input_hw == (160, 160)  # type: ignore[attr-defined]
    assert "imgsz 150 rounded up to 160" in caplog.text
    predictor.predict(scan(), conf=0.001)
    assert load_predictor(dynamic_onnx_model, backend="onnx").input_hw == (160, 160)  # type: ignore[attr-defined]
