"""RegistryModelSource: what the server polls to follow the champion."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image
from tests.net import free_port

from xraydet.registry import RegistryError, RegistryModelSource, register_model
from xraydet.registry.store import client, get_version, set_champion
from xraydet.serving.model_source import ModelRef, ModelSource, source_for


def test_source_follows_the_champion(registry_home, tiny_model, trigger_happy_model):
    register_model(tiny_model, "xray")
    register_model(trigger_happy_model, "xray")
    source = source_for("models:/xray@champion")
    assert isinstance(source, RegistryModelSource) and isinstance(source, ModelSource)
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        source.current()  # nothing served yet: the error reaches the server, which stays unhealthy

    set_champion("xray", "1", [])
    ref = source.current()
    assert isinstance(ref, ModelRef) and (ref.name, ref.version) == ("xray", "1")
    assert ref.weights.read_bytes() == tiny_model.read_bytes()
    assert source.current() is ref  # unchanged champion: no new download, same ref

    set_champion("xray", "2", ["1"])
    ref2 = source.current()
    assert ref2.version == "2" and ref2.weights.name == trigger_happy_model.name

    # The alias disappears: the registry answered, so that is an error the server shows (still serving v2).
    client().delete_registered_model_alias("xray", "champion")
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        source.current()


def test_unreachable_registry_keeps_the_last_version_quietly(registry_home, tiny_model, monkeypatch):
    register_model(tiny_model, "xray")
    set_champion("xray", "1", [])
    source = RegistryModelSource("xray")
    ref = source.current()
    # A tracking server that is down (nothing listens on the port): connection refused, no retries.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    assert source.current() is ref
    with pytest.raises(
        Exception, match=r"127\.0\.0\.1"
    ):  # before any success there is nothing to fall back on
        RegistryModelSource("xray").current()


def artifact_file(name: str, version: str) -> Path:
    """The registered weights file in the artifact store (not the download cache)."""
    mv = get_version(name, version)
    folder = Path(urlparse(mv.source).path) if mv.source.startswith("file:") else Path(mv.source)
    return folder / mv.tags["weights"]


def test_a_corrupt_new_champion_is_an_error_not_no_change(registry_home, tiny_model, trigger_happy_model):
    register_model(tiny_model, "xray")
    register_model(trigger_happy_model, "xray")
    set_champion("xray", "1", [])
    source = RegistryModelSource("xray")
    assert source.current().version == "1"
    stored = artifact_file("xray", "2")
    good = stored.read_bytes()
    stored.write_bytes(good + b"garbage")  # the artifact store's copy is damaged
    set_champion("xray", "2", ["1"])
    with pytest.raises(RegistryError, match=r"xray/2: downloaded .* does not match its registered sha256"):
        source.current()
    with pytest.raises(RegistryError, match="sha256"):  # every check says so, until it is repaired
        source.current()
    stored.write_bytes(good)
    assert source.current().version == "2"


def test_source_prefers_the_registered_onnx_export(registry_home, tiny_model, tmp_path):
    weights = tmp_path / "best.pt"
    weights.write_bytes(tiny_model.read_bytes())
    weights.with_suffix(".onnx").write_bytes(b"exported")
    register_model(weights, "xray")
    set_champion("xray", "1", [])
    assert RegistryModelSource("xray", prefer_onnx=True).current().weights.name == "best.onnx"
    assert RegistryModelSource("xray").current().weights.name == "best.pt"
    assert RegistryModelSource("xray", alias="champion").describe() == "models:/xray@champion"


def test_server_shows_why_a_new_champion_was_not_loaded(
    registry_home, tiny_model, trigger_happy_model, monkeypatch
):
    """docs/serving.md: if the new model cannot be loaded the old one keeps serving and /v1/models shows
    last_error (the reload answer shows it as error)."""
    from fastapi.testclient import TestClient

    from xraydet.serving.app import create_app
    from xraydet.serving.settings import ServeSettings

    monkeypatch.setenv("XRAYDET_CACHE_DIR", str(registry_home / "cache"))
    register_model(tiny_model, "xray")
    register_model(trigger_happy_model, "xray")
    set_champion("xray", "1", [])
    settings = ServeSettings(model="xray", backend="ultralytics", api_key="k", poll_s=0, threads=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/health").json()["version"] == "1"
        stored = artifact_file("xray", "2")
        good = stored.read_bytes()
        stored.write_bytes(good + b"garbage")
        set_champion("xray", "2", ["1"])

        reload = c.post("/v1/admin/reload", headers={"X-API-Key": "k"})
        assert reload.status_code == 200
        body = reload.json()
        assert body["changed"] is False and body["version"] == "1"
        assert body["error"] and "xray/2" in body["error"] and "sha256" in body["error"]
        models = c.get("/v1/models").json()
        assert models["last_error"] == body["error"] and models["current"]["version"] == "1"
        scan = io.BytesIO()
        Image.new("RGB", (96, 64), (120, 90, 60)).save(scan, "PNG")
        detect = c.post("/v1/detect", files={"file": ("scan.png", scan.getvalue())})
        assert detect.status_code == 200 and detect.json()["model_version"] == "1"  # still serving v1

        stored.write_bytes(good)  # repaired: the next check loads v2 and clears the error
        body = c.post("/v1/admin/reload", headers={"X-API-Key": "k"}).json()
        assert body == {"changed": True, "version": "2", "error": None}
        assert c.get("/v1/models").json()["last_error"] is None
