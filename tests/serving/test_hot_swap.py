"""Swapping the served model under load: no failed request, the version changes, a bad model is refused."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import API_KEY

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def replace_atomically(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def run_load_with_swap(
    url: str,
    payloads: list[bytes],
    swap: Callable[[], httpx.Response],
    clients: int = 4,
    per_client: int = 25,
) -> tuple[list[list[tuple[int, str | None]]], httpx.Response]:
    """``clients`` threads send ``per_client`` detect requests each; ``swap`` runs once 30 have finished."""
    results: list[list[tuple[int, str | None]]] = [[] for _ in range(clients)]

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            for k in range(per_client):
                try:
                    r = c.post("/v1/detect", files={"file": ("scan.jpg", payloads[(i + k) % len(payloads)])})
                    results[i].append((r.status_code, r.json().get("model_version")))
                except Exception as err:  # a dropped connection is a failure too
                    results[i].append((-1, repr(err)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    while sum(len(r) for r in results) < 30:  # swap mid-load
        time.sleep(0.05)
    reload = swap()
    for t in threads:
        t.join(timeout=300)
    return results, reload


def check_swap(results: list[list[tuple[int, str | None]]], v1: str, v2: str, n: int) -> None:
    flat = [r for rs in results for r in rs]
    assert len(flat) == n
    assert [r for r in flat if r[0] != 200] == []
    assert {v for _, v in flat} == {v1, v2}
    for rs in results:  # each client sees the old model, then only the new one
        versions = [v for _, v in rs]
        if v2 in versions:
            assert set(versions[versions.index(v2) :]) == {v2}


def test_hot_swap_under_concurrent_load(
    server_factory,
    onnx_model: Path,
    second_onnx_model: Path,  # type: ignore[no-untyped-def]
    val_images: list[Path],
    tmp_path: Path,
) -> None:
    model = tmp_path / "served.onnx"
    shutil.copy2(onnx_model, model)
    server = server_factory(model, "--api-key", API_KEY, "--poll-s", "0")
    v1 = httpx.get(f"{server.url}/health").json()["version"]

    def swap() -> httpx.Response:
        replace_atomically(second_onnx_model, model)
        return httpx.post(f"{server.url}/v1/admin/reload", headers={"X-API-Key": API_KEY}, timeout=120)

    results, reload = run_load_with_swap(server.url, [p.read_bytes() for p in val_images[:4]], swap)
    assert reload.status_code == 200 and reload.json()["changed"] is True, reload.text
    v2 = reload.json()["version"]
    assert v2 != v1
    check_swap(results, v1, v2, 100)
    assert httpx.get(f"{server.url}/v1/models").json()["current"]["imgsz"] == 128


def test_registry_champion_swap_under_load(
    server_factory,
    tiny_model: Path,
    val_images: list[Path],  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server follows the registry's champion alias (xraydet.registry, MLflow on SQLite in tmp)."""
    registry = pytest.importorskip("xraydet.registry")
    from mlflow import MlflowClient

    from xraydet.tracking import tracking_uri

    monkeypatch.setenv("XRAYDET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    weights = []
    for i in range(2):  # two registered versions of the same weights: the champion alias decides
        folder = tmp_path / f"v{i + 1}"
        folder.mkdir()
        shutil.copy2(tiny_model, folder / "best.pt")
        weights.append(folder / "best.pt")
    v1 = registry.register_model(weights[0], "xray")
    v2 = registry.register_model(weights[1], "xray")
    mlflow = MlflowClient(tracking_uri())
    mlflow.set_registered_model_alias("xray", "champion", v1)
    env = {"XRAYDET_HOME": str(tmp_path / "home")}
    server = server_factory("xray", "--api-key", API_KEY, "--poll-s", "0", env=env)
    assert httpx.get(f"{server.url}/health").json()["version"] == str(v1)

    def swap() -> httpx.Response:
        mlflow.set_registered_model_alias("xray", "champion", v2)
        return httpx.post(f"{server.url}/v1/admin/reload", headers={"X-API-Key": API_KEY}, timeout=300)

    results, reload = run_load_with_swap(server.url, [p.read_bytes() for p in val_images[:4]], swap)
    assert reload.status_code == 200 and reload.json() == {"changed": True, "version": str(v2), "error": None}
    check_swap(results, str(v1), str(v2), 100)


def test_polling_picks_up_a_new_model_and_refuses_a_broken_one(
    server_factory,
    onnx_model: Path,  # type: ignore[no-untyped-def]
    second_onnx_model: Path,
    tmp_path: Path,
) -> None:
    model = tmp_path / "served.onnx"
    shutil.copy2(onnx_model, model)
    server = server_factory(model, "--poll-s", "0.5")
    v1 = httpx.get(f"{server.url}/health").json()["version"]
    replace_atomically(second_onnx_model, model)
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/health").json()["version"] == v1 and time.monotonic() < deadline:
        time.sleep(0.2)
    v2 = httpx.get(f"{server.url}/health").json()["version"]
    assert v2 != v1
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    replace_atomically(broken, model)
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/v1/models").json()["last_error"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    models = httpx.get(f"{server.url}/v1/models").json()
    assert "not a loadable ONNX model" in models["last_error"]
    assert models["current"]["version"] == v2  # still serving the last good model
    ok = httpx.post(f"{server.url}/v1/detect", files={"file": ("x.png", _png())}, timeout=60)
    assert ok.status_code == 200 and ok.json()["model_version"] == v2


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (100, 50, 0)).save(buf, "PNG")
    return buf.getvalue()
