"""The real server over HTTP: responses, seed compatibility, and every kind of bad input (never a 5xx)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from xraydet.inference.base import load_rgb
from xraydet.inference.onnx_backend import OnnxPredictor

from .conftest import API_KEY, LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` zeros, compressed to a few hundred KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def post(
    server: LiveServer, data: bytes, params: dict[str, object] | None = None, name: str = "x.jpg"
) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/detect", params=params, files={"file": (name, data)}, timeout=60)


def test_health_is_seed_compatible(live_server: LiveServer) -> None:
    body = httpx.get(f"{live_server.url}/health").json()
    assert body["status"] == "healthy"
    assert body["model_loaded"] is True
    assert body["model"] == "model"
    assert len(body["version"]) == 12


def test_detect_matches_in_process_predictor(
    live_server: LiveServer, onnx_model: Path, val_images: list[Path]
) -> None:
    local = OnnxPredictor(onnx_model, threads=1)
    threats = set(local.metadata["xraydet_threats"])
    for path in val_images[:3]:
        resp = post(live_server, path.read_bytes(), {"conf_threshold": 0.001}, path.name)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        image = load_rgb(path)
        expected = local.predict(image, 0.001, 0.7).sorted_by_confidence()
        # The seed's client reads exactly these fields.
        assert body["total_count"] == len(body["items"]) == len(expected)
        assert [it["name"] for it in body["items"]] == [local.names[c] for c in expected.class_id]
        np.testing.assert_allclose([it["confidence"] for it in body["items"]], expected.confidence, atol=1e-5)
        np.testing.assert_allclose([it["bbox"] for it in body["items"]], expected.xyxy, atol=0.01)
        h, w = image.shape[:2]
        for it in body["items"]:
            np.testing.assert_allclose(it["bbox_normalized"], np.array(it["bbox"]) / [w, h, w, h], atol=1e-4)
            assert it["is_threat"] == (it["name"] in threats)
        assert body["threats"] == [it for it in body["items"] if it["is_threat"]]
        assert body["has_threat"] == bool(body["threats"])
        assert body["model_version"] == httpx.get(f"{live_server.url}/health").json()["version"]


def test_conf_threshold_filters(live_server: LiveServer, val_images: list[Path]) -> None:
    data = val_images[0].read_bytes()
    low = post(live_server, data, {"conf_threshold": 0.001}).json()
    high = post(live_server, data, {"conf_threshold": 1.0}).json()
    assert low["total_count"] > 0
    assert high["total_count"] == 0
    assert all(it["confidence"] >= 0.001 for it in low["items"])


def test_batch_reports_each_file(live_server: LiveServer, val_images: list[Path]) -> None:
    files = [("files", (p.name, p.read_bytes())) for p in val_images[:2]] + [("files", ("bad.txt", b"hello"))]
    resp = httpx.post(
        f"{live_server.url}/v1/detect/batch", params={"conf_threshold": 0.001}, files=files, timeout=60
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["n_files"] == 3 and body["n_failed"] == 1
    assert [r["ok"] for r in body["results"]] == [True, True, False]
    assert body["results"][2]["status_code"] == 415
    single = post(live_server, val_images[0].read_bytes(), {"conf_threshold": 0.001}).json()
    assert body["results"][0]["result"]["items"] == single["items"]
    assert body["total_count"] == sum(r["result"]["total_count"] for r in body["results"][:2])
    too_many = [("files", (p.name, p.read_bytes())) for p in val_images[:5]]
    assert httpx.post(f"{live_server.url}/v1/detect/batch", files=too_many, timeout=60).status_code == 413


def test_models_lists_classes_and_threats(live_server: LiveServer, tiny_model: Path) -> None:
    from xraydet.inference.export import checkpoint_info

    info = checkpoint_info(tiny_model)
    current = httpx.get(f"{live_server.url}/v1/models").json()["current"]
    assert current["classes"] == info["names"]
    assert current["threats"] == info["threats"]
    assert current["threats_source"] == "onnx metadata"
    assert current["backend"] == "onnx" and current["imgsz"] == 160


def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(
        buf, "JPEG"
    )
    return buf.getvalue()


BAD_UPLOADS = [
    pytest.param(b"", {}, 400, "empty file", id="zero-byte"),
    pytest.param(b"this is a text file, not a scan\n" * 20, {}, 415, "not an image", id="text-file"),
    pytest.param(_jpeg((400, 300))[:1500], {}, 400, "truncated", id="truncated-jpeg"),
    pytest.param(png_bomb(30000, 30000), {}, 413, "too large", id="bomb-30000x30000"),
    pytest.param(png_bomb(2000, 1600), {}, 413, "exceeds the limit", id="over-pixel-limit"),
    pytest.param(b"\xff\xd8\xff" + b"\x00" * (1024 * 1024), {}, 413, "larger than", id="over-upload-limit"),
    pytest.param(b"\x00" * (3 * 1024 * 1024), {}, 413, "request body larger than", id="over-body-limit"),
    pytest.param(_jpeg(), {"conf_threshold": 1.5}, 422, "conf_threshold", id="conf-1.5"),
    pytest.param(_jpeg(), {"conf_threshold": -1}, 422, "conf_threshold", id="conf-negative"),
    pytest.param(_jpeg(), {"conf_threshold": "abc"}, 422, "conf_threshold", id="conf-not-a-number"),
    pytest.param(_jpeg(), {"iou_threshold": 2}, 422, "iou_threshold", id="iou-2"),
    pytest.param(_jpeg(), {"conf_threshold": "nan"}, 422, "conf_threshold", id="conf-nan"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, {}, 400, "corrupt image", id="png-signature-only"),
    pytest.param(b"GIF89a" + b"\xff" * 40, {}, 400, "corrupt image", id="gif-signature-then-junk"),
]


@pytest.mark.parametrize(("data", "params", "status", "message"), BAD_UPLOADS)
def test_bad_uploads_get_4xx_with_a_message(
    live_server: LiveServer, data: bytes, params: dict[str, object], status: int, message: str
) -> None:
    resp = post(live_server, data, params)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json", resp.headers  # ErrorResponse, 413 included
    assert message.lower() in str(resp.json()["detail"]).lower()
    assert httpx.get(f"{live_server.url}/health").json()["status"] == "healthy"


def test_missing_file_field_is_422(live_server: LiveServer) -> None:
    resp = httpx.post(f"{live_server.url}/v1/detect", files={"image": ("x.jpg", _jpeg())})
    assert resp.status_code == 422
    assert "file" in resp.text
    assert httpx.post(f"{live_server.url}/v1/detect").status_code == 422


def test_odd_but_valid_images_are_accepted(live_server: LiveServer) -> None:
    grey16 = io.BytesIO()
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).save(grey16, "PNG")
    rgba = io.BytesIO()
    Image.new("RGBA", (50, 70), (10, 20, 30, 128)).save(rgba, "PNG")
    for data in (grey16.getvalue(), rgba.getvalue(), _jpeg((1, 300))):
        resp = post(live_server, data, name="odd.png")
        assert resp.status_code == 200, resp.text
        assert resp.json()["image_width"] in {64, 50, 1}


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"X-API-Key": "wrong"}, 403), ({"X-API-Key": API_KEY}, 200)]
)
def test_reload_needs_the_api_key(live_server: LiveServer, headers: dict[str, str], status: int) -> None:
    resp = httpx.post(f"{live_server.url}/v1/admin/reload", headers=headers, timeout=60)
    assert resp.status_code == status, resp.text
    if status == 200:
        assert resp.json()["changed"] is False  # same file, same version


def test_admin_disabled_without_a_configured_key(server_factory, onnx_model: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(onnx_model, "--poll-s", "0")
    resp = httpx.post(f"{server.url}/v1/admin/reload", headers={"X-API-Key": "anything"})
    assert resp.status_code == 403
    assert "--api-key" in resp.json()["detail"]


def _crop_jpeg(path: Path, w: int = 416, h: int = 300) -> bytes:
    """A non-square crop of a real scan, so that normalising by the wrong side shows."""
    with Image.open(path) as im:
        crop = im.convert("RGB").crop((0, 0, w, h))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_normalised_boxes_divide_by_width_and_height(live_server: LiveServer, val_images: list[Path]) -> None:
    body = post(live_server, _crop_jpeg(val_images[0]), {"conf_threshold": 0.001}).json()
    assert (body["image_width"], body["image_height"]) == (416, 300)
    assert body["total_count"] > 0
    for it in body["items"]:
        x1, y1, x2, y2 = it["bbox"]
        expected = [x1 / 416, y1 / 300, x2 / 416, y2 / 300]
        np.testing.assert_allclose(it["bbox_normalized"], expected, atol=2e-5)


def test_response_normalises_each_corner_by_its_own_side() -> None:
    """The tiny model only finds whole-image boxes (x1 = 0), so check the conversion on known boxes."""
    from types import SimpleNamespace

    from xraydet.serving.app import detections_to_response
    from xraydet.structures import Detections

    model = SimpleNamespace(
        names=["knife", "gun", "bottle"], threat_ids={0}, ref=SimpleNamespace(name="m", version="v")
    )
    dets = Detections(np.array([[104.0, 30.0, 208.0, 150.0], [41.6, 60.0, 83.2, 90.0]]), [0, 2], [0.9, 0.5])
    body = detections_to_response(model, dets, 416, 300, 1.0)  # type: ignore[arg-type]
    assert [it.bbox_normalized for it in body.items] == [[0.25, 0.1, 0.5, 0.5], [0.1, 0.2, 0.2, 0.3]]
    assert [it.is_threat for it in body.items] == [True, False]
    assert body.has_threat and [it.class_id for it in body.threats] == [0]


def test_is_threat_follows_the_threats_option(
    server_factory, onnx_model: Path, val_images: list[Path]
) -> None:  # type: ignore[no-untyped-def]
    names = list(OnnxPredictor(onnx_model, threads=1).names)
    threats = names[:1]  # every other class is left out
    server = server_factory(onnx_model, "--poll-s", "0", "--threats", ",".join(threats))
    seen: set[bool] = set()
    for path in val_images[:4]:
        body = post(server, path.read_bytes(), {"conf_threshold": 0.001}).json()
        for it in body["items"]:
            assert it["is_threat"] is (it["name"] in threats), it
            seen.add(it["is_threat"])
        assert body["threats"] == [it for it in body["items"] if it["is_threat"]]
        assert body["has_threat"] == bool(body["threats"])
    assert False in seen  # some box of a left-out class was seen, and called not a threat


def test_iou_threshold_changes_the_boxes_kept(live_server: LiveServer, val_images: list[Path]) -> None:
    counts = []
    for path in val_images[:5]:
        data = path.read_bytes()
        loose = post(live_server, data, {"conf_threshold": 0.001, "iou_threshold": 0.95}).json()
        tight = post(live_server, data, {"conf_threshold": 0.001, "iou_threshold": 0.05}).json()
        assert tight["total_count"] <= loose["total_count"]
        counts.append((tight["total_count"], loose["total_count"]))
    assert any(t < lo for t, lo in counts), counts
