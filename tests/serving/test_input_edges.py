"""Inputs at the edges: scans read from disk and uploaded scans decode alike (16-bit too), unusable pixels
are refused with the file's name, and out-of-range options are refused at the command line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from xraydet.errors import XrayDetError
from xraydet.inference import load_rgb
from xraydet.serving.images import ImageError, decode_image
from xraydet.serving.settings import ServeSettings


def grey_scan() -> np.ndarray:
    """A 64 x 80 grey 'scan' with dark objects on a bright belt, like an X-ray's dynamic range."""
    rng = np.random.default_rng(0)
    scan = rng.integers(150, 240, (64, 80)).astype(np.uint8)
    scan[10:30, 20:35] = 20
    return scan


def test_a_16_bit_scan_reads_the_same_from_disk_as_uploaded(tmp_path: Path):
    path = tmp_path / "scan16.png"
    Image.fromarray(grey_scan().astype(np.uint16) * 257).save(path)  # the 8-bit scan at 16-bit depth
    assert Image.open(path).mode.startswith("I;16")
    from_disk = load_rgb(path)
    uploaded = decode_image(path.read_bytes(), 10**8, path.name)
    np.testing.assert_array_equal(from_disk, uploaded)
    # stretched, not clipped at 255: the dark object stays dark, the belt stays lighter than it
    assert from_disk[15, 25, 0] == 0 and from_disk[50, 60, 0] > 100
    assert np.mean(from_disk == 255) < 0.05


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_float_scan_with_non_finite_pixels_is_refused_by_name(tmp_path: Path, bad: float):
    scan = grey_scan().astype(np.float32)
    scan[0, 0] = bad
    path = tmp_path / "scan.tif"
    Image.fromarray(scan, mode="F").save(path)
    with pytest.raises(ImageError, match=r"scan\.tif: not a usable scan: 1 of its pixels are not") as err:
        decode_image(path.read_bytes(), 10**8, "scan.tif")
    assert err.value.status_code == 400
    with pytest.raises(XrayDetError, match=rf"{path}: not a usable scan"):
        load_rgb(path)
    buf = io.BytesIO()  # a finite float scan still reads
    Image.fromarray(grey_scan().astype(np.float32), mode="F").save(buf, format="TIFF")
    assert decode_image(buf.getvalue(), 10**8).shape == (64, 80, 3)


def test_an_unbounded_upload_limit_is_refused():
    with pytest.raises(ValidationError, match="max_upload_mb"):
        ServeSettings(max_upload_mb=float("inf"))


def test_out_of_range_options_are_refused_at_the_command_line(tmp_path: Path):
    from xraydet.cli.main import app

    runner = CliRunner()
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"never read: the option is refused first")
    export = runner.invoke(app, ["export", str(weights), "--imgsz", "0"], terminal_width=200)
    assert export.exit_code == 2 and "--imgsz" in export.output
    run = runner.invoke(app, ["eval", "run", str(weights), str(tmp_path), "--target-detection", "5"],
                        terminal_width=200)
    assert run.exit_code == 2 and "--target-detection" in run.output
    api_test = runner.invoke(app, ["api-test", "--api-url", "http://127.0.0.1:9", "--dataset", str(tmp_path),
                                   "--timeout-s", "0"], terminal_width=200)
    assert api_test.exit_code == 2 and "--timeout-s" in api_test.output


def test_an_image_given_as_the_model_is_named_not_a_traceback(tmp_path: Path):
    image = tmp_path / "scan.jpg"
    Image.fromarray(grey_scan()).save(image)
    with pytest.raises(XrayDetError, match=r"scan\.jpg: not a readable Ultralytics checkpoint"):
        from xraydet.inference import load_predictor

        load_predictor(image, backend="ultralytics")


def test_an_export_size_off_the_stride_is_reported_as_exported(tiny_model: Path, tmp_path: Path, caplog):
    import shutil

    from xraydet.inference import load_predictor
    from xraydet.inference.export import export_onnx

    weights = tmp_path / "tiny.pt"
    shutil.copy2(tiny_model, weights)
    with caplog.at_level("INFO", logger="xraydet.inference.export"):
        onnx = export_onnx(weights, 150)
    messages = [r.getMessage() for r in caplog.records]
    assert any("imgsz 150 rounded up to 160" in m for m in messages), messages
    assert any(m.endswith("(imgsz 160)") for m in messages), messages
    assert load_predictor(onnx).imgsz == 160
