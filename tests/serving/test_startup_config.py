"""Startup and settings: a wrong setting is refused when the server starts (or at the command line), not
answered with a 503 or a 500 to every client afterwards."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError
from tests.net import free_port

from xraydet.inference import load_rgb
from xraydet.inference.onnx_backend import OnnxPredictor
from xraydet.serving.app import create_app
from xraydet.serving.model_source import FileModelSource
from xraydet.serving.settings import ServeSettings
from xraydet.serving.threats import UnknownThreatsSetting

from .conftest import API_KEY


def _png(width: int, height: int, noise: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if noise else None
    im = Image.fromarray(pixels) if pixels is not None else Image.new("L", (width, height), 128)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _with_class_names(onnx_model: Path, names: list[str], out: Path) -> Path:
    """A copy of ``onnx_model`` whose metadata names other classes: another model, as serving sees it."""
    import onnx

    graph = onnx.load(str(onnx_model))
    meta = {p.key: p for p in graph.metadata_props}
    meta["names"].value = repr(dict(enumerate(names)))
    if "xraydet_threats" in meta:
        meta["xraydet_threats"].value = repr(names)
    onnx.save(graph, str(out))
    return out


def test_unknown_threat_classes_fail_the_startup(onnx_model: Path) -> None:
    names = OnnxPredictor(onnx_model, threads=1).names
    # names match regardless of case (names[1] in capitals is a class); names matching none are refused
    settings = ServeSettings(poll_s=0, threads=1, threats=["bomb", names[0], names[1].upper(), "Rifle"])
    app = create_app(settings, FileModelSource(onnx_model))
    with pytest.raises(UnknownThreatsSetting) as err, TestClient(app):
        pass
    assert "unknown threat classes ['bomb', 'Rifle']" in str(err.value)
    assert f"the model's classes are {names}" in str(err.value)


def test_unknown_threat_classes_end_the_serve_command_with_one_line(onnx_model: Path, tmp_path: Path) -> None:
    names = OnnxPredictor(onnx_model, threads=1).names
    cmd = [sys.executable, "-m", "xraydet.cli.serve", "serve", "--model", str(onnx_model)]
    cmd += ["--port", str(free_port()), "--threads", "1", "--poll-s", "0", "--threats", f"{names[0]},bomb"]
    env = {**os.environ, "YOLO_OFFLINE": "true", "XRAYDET_CACHE_DIR": str(tmp_path / "cache")}
    # Without the startup check the server runs (answering 503): the timeout fails the test.
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "unknown threat classes ['bomb']" in done.stderr and str(names) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_swapped_in_model_the_threats_setting_does_not_fit_is_refused_the_old_one_kept(
    onnx_model: Path, tmp_path: Path
) -> None:
    """The setting was checked against the model at startup; a later model without those classes is a bad
    new model like any other: refused with the reason in last_error, the old one kept serving."""
    names = OnnxPredictor(onnx_model, threads=1).names
    served = tmp_path / "served.onnx"
    shutil.copy2(onnx_model, served)
    renamed = _with_class_names(onnx_model, [f"other_{n}" for n in names], tmp_path / "renamed.onnx")
    settings = ServeSettings(api_key=API_KEY, poll_s=0, threads=1, threats=[names[0]])
    with TestClient(create_app(settings, FileModelSource(served)), raise_server_exceptions=False) as c:
        v1 = c.get("/health").json()["version"]
        os.replace(renamed, served)
        reload = c.post("/v1/admin/reload", headers={"X-API-Key": API_KEY})
        assert reload.status_code == 200, reload.text
        body = reload.json()
        assert body["changed"] is False and body["version"] == v1
        assert f"unknown threat classes [{names[0]!r}]" in body["error"]
        assert c.get("/v1/models").json()["current"]["threats"] == [names[0]]
        detect = c.post("/v1/detect", files={"file": ("scan.png", _png(64, 48))})
        assert detect.status_code == 200 and detect.json()["model_version"] == v1


def test_a_threats_option_naming_no_class_is_refused() -> None:
    """An empty list would make no class a threat: every alarm silently off (the default is all classes)."""
    with pytest.raises(ValidationError, match="threats"):
        ServeSettings(threats=[])


def test_a_threats_option_naming_no_class_ends_the_serve_command(onnx_model: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "xraydet.cli.serve", "serve", "--model", str(onnx_model), "--threats", " , "]
    cmd += ["--port", str(free_port()), "--poll-s", "0"]
    env = {**os.environ, "YOLO_OFFLINE": "true", "XRAYDET_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)  # a server would hang
    assert done.returncode == 2 and "--threats" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_misspelt_setting_is_refused_not_ignored() -> None:
    with pytest.raises(ValidationError, match="api_keys"):
        ServeSettings(api_keys="secret")  # type: ignore[call-arg]


@pytest.mark.parametrize("max_upload_mb", [1e6, 1e13], ids=["1TB", "10EB"])
def test_a_huge_upload_limit_still_serves_uploads(onnx_model: Path, max_upload_mb: float) -> None:
    """The limit was the size of the read: bytes allocated up front (MemoryError), or no index at all."""
    settings = ServeSettings(poll_s=0, threads=1, max_upload_mb=max_upload_mb)
    scan = _png(800, 800, noise=True)
    assert len(scan) > 1024 * 1024  # over Starlette's in-memory part size: the upload is spooled to disk
    with TestClient(create_app(settings, FileModelSource(onnx_model)), raise_server_exceptions=False) as c:
        one = c.post("/v1/detect", files={"file": ("scan.png", scan)})
        assert one.status_code == 200, one.text
        batch = c.post("/v1/detect/batch", files=[("files", ("scan.png", scan))])
        assert batch.status_code == 200 and batch.json()["n_failed"] == 0, batch.text


def test_one_apps_pixel_limit_does_not_shrink_anothers(
    onnx_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIL's bomb limit is global to the process: setting it to the last app's max_pixels made another app
    (and every image read in the process) refuse images within its own limit."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    source = FileModelSource(onnx_model)
    roomy = create_app(ServeSettings(poll_s=0, threads=1, max_pixels=5_000_000), source)
    small = create_app(ServeSettings(poll_s=0, threads=1, max_pixels=1_000_000), source)
    scan = _png(2000, 1500)  # 3 MP
    with TestClient(roomy) as big_client, TestClient(small) as small_client:
        assert big_client.post("/v1/detect", files={"file": ("scan.png", scan)}).status_code == 200
        refused = small_client.post("/v1/detect", files={"file": ("scan.png", scan)})
        assert refused.status_code == 413 and "exceeds the limit of 1000000" in refused.json()["detail"]
    path = tmp_path / "scan.png"
    path.write_bytes(scan)
    assert load_rgb(path).shape == (1500, 2000, 3)


def test_threats_recorded_in_another_case_than_the_class_names_still_load(
    onnx_model: Path, tmp_path: Path
) -> None:
    """A data set matches its threats to its names regardless of case (``threats: [KNIFE]`` for ``knife``),
    and an export carries that list into the ONNX metadata: the server must read it the same way, with the
    model's own spelling, not refuse the model and answer 503 for ever."""
    import onnx

    names = OnnxPredictor(onnx_model, threads=1).names
    graph = onnx.load(str(onnx_model))
    meta = {p.key: p for p in graph.metadata_props}
    entry = meta.get("xraydet_threats") or graph.metadata_props.add()
    entry.key, entry.value = "xraydet_threats", repr([names[0].upper()])
    served = tmp_path / "shouting.onnx"
    onnx.save(graph, str(served))
    settings = ServeSettings(poll_s=0, threads=1)
    with TestClient(create_app(settings, FileModelSource(served)), raise_server_exceptions=False) as c:
        health = c.get("/health")
        assert health.status_code == 200, c.get("/v1/models").json()["last_error"]
        current = c.get("/v1/models").json()["current"]
        assert current["threats"] == [names[0]] and current["threats_source"] == "onnx metadata"
    settings = ServeSettings(poll_s=0, threads=1, threats=[names[0].upper()])
    with TestClient(create_app(settings, FileModelSource(served))) as c:
        assert c.get("/v1/models").json()["current"]["threats"] == [names[0]]
