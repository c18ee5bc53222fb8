"""Acceptance: a running server follows the registry's champion through a promotion and a rollback, under
concurrent load, without failing a single request.

The real ``xraydet serve`` runs in a subprocess on a loopback port, polling the registry every 0.5 s; four
httpx clients keep sending real scans while the champion is promoted (v1 -> v2) and rolled back (v2 -> v1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from tests.net import free_port

from xraydet.data.dataset import load_dataset
from xraydet.registry import champion, promote, register_model, rollback

pytestmark = pytest.mark.slow

CLIENTS = 4


def wait_for_version(url: str, version: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> float:
    """Seconds until /health reports ``version`` (fails if the server dies or it never does)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        assert proc.poll() is None, "the server exited"
        try:
            health = httpx.get(f"{url}/health", timeout=2).json()
            if health.get("model_loaded") and health.get("version") == version:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"/health never reported version {version} within {timeout_s} s")


class Load:
    """``CLIENTS`` threads posting a scan to /v1/detect in a loop, recording every outcome."""

    def __init__(self, url: str, image: Path) -> None:
        self.url, self.payload = url, image.read_bytes()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.threat_flags: dict[str, set[bool]] = {}
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/v1/detect", params={"conf_threshold": 0.25},
                                    files={"file": ("scan.jpg", self.payload, "image/jpeg")})
                    if r.status_code != 200:
                        self._fail(f"HTTP {r.status_code}: {r.text[:200]}")
                        continue
                    body = r.json()
                    with self.lock:
                        self.versions[body["model_version"]] += 1
                        self.threat_flags.setdefault(body["model_version"], set()).add(body["has_threat"])
                except Exception as err:  # a dropped connection is a failed request too
                    self._fail(f"{type(err).__name__}: {err}")

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_champion_hot_swap_under_load(registry_home, tiny_model, trigger_happy_model, lenient_policy,
                                      eval_args, tmp_path):
    v1 = register_model(tiny_model, "xray")
    v2 = register_model(trigger_happy_model, "xray")
    assert promote("xray", v1, policy=lenient_policy, **eval_args).promoted

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "XRAYDET_CACHE_DIR": str(tmp_path / "onnx-cache"), "YOLO_OFFLINE": "true"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xraydet.cli.main", "serve", "--model", "xray", "--poll-s", "0.5",
         "--port", str(port), "--imgsz", "160", "--threads", "1", "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_version(url, v1, proc)
        image = load_dataset(eval_args["dataset"]).images("val")[0]
        with Load(url, image) as load:
            time.sleep(1.0)
            # v2 flags threats everywhere, so the comparison refuses it; a forced promotion is the operator's
            # deliberate swap (and is recorded as such).
            decision = promote("xray", v2, policy=lenient_policy, force_reason="hot-swap drill", **eval_args)
            assert decision.decision == "forced" and champion("xray") == v2
            wait_for_version(url, v2, proc)
            time.sleep(1.0)
            assert rollback("xray") == v1
            wait_for_version(url, v1, proc)
            time.sleep(1.0)
        assert all(not t.is_alive() for t in load.threads)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    server_log = (tmp_path / "server.log").read_text()
    print(f"requests per version: {dict(load.versions)}; server log:\n{server_log[-3000:]}")
    assert load.failures == [], f"{len(load.failures)} failed, first: {load.failures[:3]}\n{server_log}"
    assert load.versions[v1] > 0 and load.versions[v2] > 0, load.versions
    assert set(load.versions) == {v1, v2}
    # Responses labelled v2 really came from the trigger-happy model.
    assert load.threat_flags[v2] == {True}
