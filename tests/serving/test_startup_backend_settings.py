"""A ``device`` or ``imgsz`` the backend cannot honour stops the server at startup with one line, instead of
a server answering 503 forever (an unusable device) or quietly running on the CPU or at another size."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.net import free_port

from xraydet.inference import UnusableSetting
from xraydet.serving.app import create_app
from xraydet.serving.model_source import FileModelSource
from xraydet.serving.settings import ServeSettings

from .conftest import API_KEY


def _start(settings: ServeSettings, model: Path) -> None:
    with TestClient(create_app(settings, FileModelSource(model))):
        pass


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (64, 48), 128).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("backend", ["auto", "onnx", "ultralytics"])
def test_an_unusable_device_fails_the_startup(onnx_model: Path, backend: str) -> None:
    settings = ServeSettings(poll_s=0, threads=1, backend=backend, device="bogus")  # type: ignore[arg-type]
    with pytest.raises(UnusableSetting, match="--device bogus"):
        _start(settings, onnx_model)


@pytest.mark.parametrize("backend", ["onnx", "auto"])
def test_a_gpu_asked_of_the_onnx_backend_without_cuda_fails_the_startup(
    onnx_model: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """``auto`` serves an .onnx with ONNX Runtime on a GPU too: Ultralytics' own .onnx loader would drop to
    the CPU with a log line where torch sees a GPU and onnxruntime has no CUDA provider."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    settings = ServeSettings(poll_s=0, threads=1, backend=backend, device="0")  # type: ignore[arg-type]
    with pytest.raises(UnusableSetting, match="--device 0: this onnxruntime has no CUDA provider"):
        _start(settings, onnx_model)


def test_another_imgsz_than_a_fixed_size_models_fails_the_startup(onnx_model: Path) -> None:
    settings = ServeSettings(poll_s=0, threads=1, imgsz=320)
    with pytest.raises(UnusableSetting, match=r"--imgsz 320: .* has a fixed 160x160 input"):
        _start(settings, onnx_model)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--device", "bogus"], "--device bogus: not a device the onnx backend can use"),
        (["--imgsz", "320"], "--imgsz 320: "),
    ],
    ids=["device", "imgsz"],
)
def test_an_unusable_backend_option_ends_the_serve_command_with_one_line(
    onnx_model: Path, tmp_path: Path, option: list[str], message: str
) -> None:
    cmd = [sys.executable, "-m", "xraydet.cli.serve", "serve", "--model", str(onnx_model)]
    cmd += ["--port", str(free_port()), "--threads", "1", "--poll-s", "0", *option]
    env = {**os.environ, "YOLO_OFFLINE": "true", "XRAYDET_CACHE_DIR": str(tmp_path / "cache")}
    # Without the startup check the server runs (answering 503, or at 160): the timeout fails the test.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_swapped_in_model_of_another_fixed_size_is_refused_the_old_one_kept(
    onnx_model: Path, second_onnx_model: Path, tmp_path: Path
) -> None:
    """The imgsz setting was checked against the first model; a later one exported at 128 is a model that does
    not fit the settings, refused like a bad model (as a threats setting it lacks is)."""
    served = tmp_path / "served.onnx"
    shutil.copy2(onnx_model, served)
    settings = ServeSettings(api_key=API_KEY, poll_s=0, threads=1, imgsz=160)
    with TestClient(create_app(settings, FileModelSource(served)), raise_server_exceptions=False) as c:
        v1 = c.get("/health").json()["version"]
        shutil.copy2(second_onnx_model, tmp_path / "next.onnx")
        os.replace(tmp_path / "next.onnx", served)
        reload = c.post("/v1/admin/reload", headers={"X-API-Key": API_KEY})
        assert reload.status_code == 200, reload.text
        body = reload.json()
        assert body["changed"] is False and body["version"] == v1
        assert "--imgsz 160: " in body["error"] and "fixed 128x128 input" in body["error"]
        assert c.get("/v1/models").json()["current"]["imgsz"] == 160
        detect = c.post("/v1/detect", files={"file": ("scan.png", _png())})
        assert detect.status_code == 200 and detect.json()["model_version"] == v1
