"""Upload decoding: hand-made cases with known answers; corrupted real scans raise only 4xx ImageErrors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraydet.serving.images import ImageError, decode_image


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("image", "fmt", "pixel"),
    [
        (Image.new("L", (5, 4), 200), "PNG", (200, 200, 200)),
        (Image.new("RGBA", (5, 4), (10, 20, 30, 0)), "PNG", (10, 20, 30)),
        (Image.new("P", (5, 4), 3), "GIF", None),
        (Image.new("RGB", (5, 4), (1, 2, 3)), "BMP", (1, 2, 3)),
        (Image.new("CMYK", (5, 4)), "TIFF", (255, 255, 255)),
    ],
)
def test_modes_become_rgb(image: Image.Image, fmt: str, pixel: tuple[int, int, int] | None) -> None:
    out = decode_image(_encode(image, fmt), 100)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    if pixel is not None:
        assert tuple(out[0, 0]) == pixel


def test_16_bit_scan_is_stretched_not_clipped() -> None:
    arr = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    out = decode_image(_encode(Image.fromarray(arr), "PNG"), 100)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert len(np.unique(out[..., 0])) == 20  # every level kept distinct


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"%PDF-1.4 not allowed", 415),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", 415),  # EPS would run Ghostscript: refused by format list
        (_encode(Image.new("RGB", (11, 10)), "PNG"), 413),  # 110 pixels > 100
    ],
)
def test_refusals(data: bytes, status: int) -> None:
    import ultralytics.utils.patches  # noqa: F401  (it patches Image.open: the refusals must not change)

    with pytest.raises(ImageError) as err:
        decode_image(data, 100)
    assert err.value.status_code == status


def _broken_ihdr(png: bytes) -> bytes:
    """The PNG with one byte of its IHDR chunk changed (its CRC no longer matches)."""
    data = bytearray(png)
    data[18] ^= 0xFF  # inside the width field
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (_broken_ihdr(_encode(Image.new("RGB", (5, 4)), "PNG")), 400, "corrupt image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "corrupt image"),
        (b"\xff\xd8\xff" + b"\x00" * 40, 400, "corrupt image"),
        (b"GIF89a" + b"\xff" * 40, 400, "corrupt image"),
        (b"RIFF\x10\x00\x00\x00WEBPjunk", 400, "corrupt image"),
        (b"this is a text file, not a scan\n", 415, "not an image"),
        (b"%PDF-1.4 not allowed", 415, "not an image"),
    ],
    ids=[
        "png-broken-ihdr",
        "png-signature-only",
        "jpeg-signature-only",
        "gif-junk",
        "webp-junk",
        "text",
        "pdf",
    ],
)
def test_a_known_signature_that_does_not_open_is_corrupt_not_unsupported(
    data: bytes, status: int, message: str
) -> None:
    import ultralytics.utils.patches  # noqa: F401

    with pytest.raises(ImageError) as err:
        decode_image(data, 10**6, "scan.png")
    assert err.value.status_code == status
    assert str(err.value).startswith("scan.png: ") and message in str(err.value)


@pytest.mark.realdata
def test_corrupted_real_scans_only_raise_image_errors(val_images: list[Path]) -> None:
    rng = np.random.default_rng(0)
    real = val_images[0].read_bytes()
    png = _encode(Image.open(io.BytesIO(real)), "PNG")
    outcomes: set[int | str] = set()
    for base in (real, png):
        for i in range(60):
            data = bytearray(base[: len(base) - int(rng.integers(0, len(base) // 2))] if i % 3 == 0 else base)
            for _ in range(int(rng.integers(1, 12))):
                where = int(rng.integers(0, min(len(data), 600 if i % 2 else len(data))))
                data[where] = int(rng.integers(256))
            try:
                decode_image(bytes(data), 10**7)
                outcomes.add("ok")
            except ImageError as err:
                assert 400 <= err.status_code < 500
                outcomes.add(err.status_code)
    assert 400 in outcomes  # the corruption did produce refusals, not only lucky decodes
