"""The app's own answers to bad requests, in process (TestClient): the body-size 413 is the API's JSON error,
and the admin key is checked as the bytes a client can send."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from xraydet.serving.app import create_app
from xraydet.serving.model_source import FileModelSource
from xraydet.serving.settings import ServeSettings

from .conftest import API_KEY

LIMIT_MB = 0.1  # 104,857 bytes per image


@pytest.fixture(scope="module")
def client(onnx_model: Path) -> Iterator[TestClient]:
    settings = ServeSettings(api_key=API_KEY, poll_s=0, threads=1, max_upload_mb=LIMIT_MB, max_batch_files=2)
    with TestClient(create_app(settings, FileModelSource(onnx_model)), raise_server_exceptions=False) as c:
        yield c


def _multipart(size: int) -> tuple[bytes, str]:
    boundary = "xraydet-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + b"\xff\xd8\xff" + b"\x00" * size + f"\r\n--{boundary}--\r\n".encode(), boundary


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/detect/batch"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_a_json_413(client: TestClient, path: str, declared: bool) -> None:
    body, boundary = _multipart(4 * 1024 * 1024)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must count the bytes as they come
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    resp = client.post(path, content=body if declared else chunks(), headers=headers)
    assert resp.status_code == 413, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert "request body larger than" in resp.json()["detail"]
    assert "--max-upload-mb" in resp.json()["detail"]
    assert client.get("/health").status_code == 200


def test_body_under_the_limit_reaches_the_endpoint(client: TestClient) -> None:
    body, boundary = _multipart(50_000)
    resp = client.post(
        "/v1/detect", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    # The endpoint's own answer about the file (it is no JPEG), not the body limit's.
    assert resp.status_code != 413 and "big.jpg" in resp.json()["detail"], resp.text


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (b"wrong", 403),
        ("clé".encode("latin-1"), 403),
        ("ключ".encode(), 403),
        (API_KEY.encode(), 200),
    ],
    ids=["wrong", "latin-1", "utf-8", "right"],
)
def test_admin_key_bytes(client: TestClient, key: bytes, status: int) -> None:
    resp = client.post("/v1/admin/reload", headers={"X-API-Key": key})  # type: ignore[dict-item]
    assert resp.status_code == status, resp.text


@pytest.mark.parametrize("key", ["clé-secrète", "ключ", "tab\tkey", " padded "])
def test_a_key_no_client_could_send_is_refused_naming_the_field(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match="api_key") as err:
        ServeSettings(api_key=key)
    assert "API key" in str(err.value)
    monkeypatch.setenv("XRAYDET_API_KEY", key)
    with pytest.raises(ValidationError, match="api_key"):
        ServeSettings()
    import typer

    from xraydet.cli import serve

    app = typer.Typer()
    serve.register(app)
    monkeypatch.delenv("XRAYDET_API_KEY")
    result = CliRunner().invoke(app, ["serve", "--model", "missing.onnx", "--api-key", key])
    assert result.exit_code != 0
    assert "--api-key" in str(result.exception) + result.output


def test_ascii_keys_are_accepted() -> None:
    assert ServeSettings(api_key="S3cret-key_with.punctuation!").api_key == "S3cret-key_with.punctuation!"
    assert ServeSettings(api_key=None).api_key is None
