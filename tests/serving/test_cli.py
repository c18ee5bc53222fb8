"""`xraydet export` and `xraydet serve` with a .pt: exported once to the cache (ONNX) or run by PyTorch."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from xraydet.cli import serve

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def _app() -> typer.Typer:
    app = typer.Typer()
    serve.register(app)
    return app


def test_export_command(tiny_model: Path, tmp_path: Path) -> None:
    from xraydet.inference.onnx_backend import OnnxPredictor

    pt = tmp_path / "m.pt"
    shutil.copy2(tiny_model, pt)
    out = tmp_path / "out" / "m128.onnx"
    result = CliRunner().invoke(_app(), ["export", str(pt), "--imgsz", "128", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert OnnxPredictor(out).input_hw == (128, 128)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "out"]  # nothing written beside the weights
    missing = CliRunner().invoke(_app(), ["export", str(tmp_path / "nope.pt")])
    assert missing.exit_code != 0


def test_serve_pt_with_onnx_and_ultralytics_backends(
    server_factory,
    tiny_model: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    val_images: list[Path],
) -> None:
    pt = tmp_path / "weights" / "best.pt"
    pt.parent.mkdir()
    shutil.copy2(tiny_model, pt)
    onnx_srv = server_factory(pt, "--poll-s", "0")  # backend auto on CPU = ONNX Runtime via a cached export
    torch_srv = server_factory(pt, "--poll-s", "0", "--backend", "ultralytics")
    info = httpx.get(f"{onnx_srv.url}/v1/models").json()["current"]
    assert info["backend"] == "onnx" and info["weights"] == str(pt)
    assert list((tmp_path / "cache" / "onnx").glob("best-*-160.onnx"))
    assert sorted(p.name for p in pt.parent.iterdir()) == ["best.pt"]
    torch_info = httpx.get(f"{torch_srv.url}/v1/models").json()["current"]
    assert torch_info["backend"] == "ultralytics"
    assert torch_info["threats"] == info["threats"] and torch_info["classes"] == info["classes"]
    assert torch_info["threats_source"] == "training data.yaml"
    for path in val_images[:2]:
        bodies = [
            httpx.post(
                f"{s.url}/v1/detect",
                params={"conf_threshold": 0.001},
                files={"file": (path.name, path.read_bytes())},
                timeout=60,
            ).json()
            for s in (onnx_srv, torch_srv)
        ]
        assert bodies[0]["total_count"] == bodies[1]["total_count"] > 0
        np.testing.assert_allclose(
            [i["bbox"] for i in bodies[0]["items"]], [i["bbox"] for i in bodies[1]["items"]], atol=0.5
        )
