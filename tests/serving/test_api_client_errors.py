"""The API client without a live server (httpx's MockTransport): its errors are ApiErrors, and api-test counts
threat labels and threat-free folders as documented."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from xraydet.data.dataset import write_data_yaml
from xraydet.serving import api_client
from xraydet.serving.api_client import ApiClient, ApiError, run_api_test

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> ApiClient:
    api = ApiClient("http://api.test")
    api.client.close()
    api.client = httpx.Client(base_url=api.api_url, transport=httpx.MockTransport(handler))
    return api


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda r: httpx.Response(500, text="Internal Server Error"), r"/v1/models answered 500"),
        (lambda r: httpx.Response(200, text="<html>proxy</html>"), r"/v1/models answered 200 with non-JSON"),
        (lambda r: httpx.Response(200, json=["not", "a", "body"]), r"/v1/models answered 200 .*not an"),
        (_refuse, r"/v1/models: request failed"),
    ],
    ids=["server-error", "not-json", "json-list", "unreachable"],
)
def test_models_failures_are_api_errors_not_httpx_tracebacks(handler: Handler, message: str) -> None:
    with _client(handler) as api, pytest.raises(ApiError, match=message):
        api.models()


HEALTH = r"http://api\.test/health"


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (lambda r: httpx.Response(200, json=["healthy"]), rf"{HEALTH} answered 200 .*not an object"),
        (lambda r: httpx.Response(200, json="healthy"), rf"{HEALTH} answered 200 .*not an object"),
        (lambda r: httpx.Response(502, text="<html>502</html>"), rf"{HEALTH} answered 502 .*non-JSON"),
        (lambda r: httpx.Response(200, json={"status": "starting"}), r"http://api\.test is up but not ready"),
        (_refuse, r"http://api\.test is not reachable"),
    ],
    ids=["json-list", "json-string", "not-json", "not-ready", "unreachable"],
)
def test_health_failures_are_api_errors_naming_the_url(handler: Handler, message: str) -> None:
    """A foreign server's /health (a JSON list, HTML) is an ApiError naming the URL, not an AttributeError."""
    with _client(handler) as api, pytest.raises(ApiError, match=message):
        api.check_health()


def test_models_of_an_api_without_the_route_is_none() -> None:
    with _client(lambda r: httpx.Response(404, json={"detail": "Not Found"})) as api:
        assert api.models() is None


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def _quiet_api(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/health":
        return httpx.Response(
            200, json={"status": "healthy", "model_loaded": True, "model": "m", "version": "1"}
        )
    return httpx.Response(200, json={"items": [], "total_count": 0})


def test_api_test_counts_any_threat_label_and_every_threat_free_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    labels = {"bottle_then_knife": "1 0.3 0.3 0.2 0.2\n0 0.7 0.7 0.2 0.2\n", "bottle": "1 0.5 0.5 0.2 0.2\n"}
    for stem, text in labels.items():
        _png(root / "images" / "val" / f"{stem}.png")
        (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "val" / f"{stem}.txt").write_text(text)
    data = write_data_yaml(root, ["knife", "bottle"], {"val": "images/val"}, ["knife"])
    negatives = tmp_path / "neg"  # an images/<split> tree, as `xraydet eval --negatives` takes it
    _png(negatives / "images" / "train" / "n1.png")
    _png(negatives / "images" / "val" / "n2.png")
    _png(negatives / "images" / "test" / "n3.png")
    monkeypatch.setattr(
        api_client.httpx, "Client", functools.partial(httpx.Client, transport=httpx.MockTransport(_quiet_api))
    )

    report = run_api_test("http://api.test", data, negatives=negatives)

    assert report.n_images == 2 and report.n_failed == 0
    assert report.n_threat_images == 1  # the knife is on the second label line
    assert report.n_negatives == 3 and report.false_alarms == 0 and report.false_alarm_rate == 0.0
