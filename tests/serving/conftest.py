"""Serving fixtures: a second ONNX model, and real uvicorn servers on free loopback ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.net import free_port

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def second_onnx_model(onnx_model: Path) -> Path:
    """A different model (same weights exported at 128 px): another file hash, so another version."""
    from xraydet.inference.export import export_onnx

    return export_onnx(onnx_model.with_suffix(".pt"), 128, onnx_model.with_name("tiny128.onnx"))


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(
    model: Path | str, workdir: Path, *extra: str, env: dict[str, str] | None = None, timeout_s: float = 120.0
) -> LiveServer:
    """Run `python -m xraydet.cli.serve serve --model MODEL ...` (the real CLI) and wait until it is
    healthy."""
    port = free_port()
    log = workdir / f"server-{port}.log"
    env = {**os.environ, "YOLO_OFFLINE": "true", "XRAYDET_CACHE_DIR": str(workdir / "cache"), **(env or {})}
    env.pop("XRAYDET_API_KEY", None)
    cmd = [
        sys.executable,
        "-m",
        "xraydet.cli.serve",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--threads",
        "1",
        "--log-level",
        "warning",
        *extra,
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not healthy after {timeout_s} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def live_server(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for read-only tests: 1 MB upload limit, 3 MP pixel limit, an API key, no polling."""
    work = tmp_path_factory.mktemp("live")
    model = work / "model.onnx"
    shutil.copy2(onnx_model, model)
    server = start_server(
        model,
        work,
        "--api-key",
        API_KEY,
        "--max-upload-mb",
        "1",
        "--max-pixels",
        "3000000",
        "--max-batch-files",
        "4",
        "--poll-s",
        "0",
    )
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start extra servers (each test's own); all are stopped afterwards."""
    started: list[LiveServer] = []

    def make(model: Path | str, *extra: str, env: dict[str, str] | None = None) -> LiveServer:
        server = start_server(model, tmp_path, *extra, env=env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def val_images(opixray_yaml: Path) -> list[Path]:
    """20 real validation scans (read-only)."""
    from xraydet.data.dataset import load_dataset

    return load_dataset(opixray_yaml).images("val")[:20]
