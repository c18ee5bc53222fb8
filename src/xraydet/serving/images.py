"""Turning uploaded bytes into an RGB array, refusing anything that could hurt the server.

Limits are checked before the pixels are decoded: the byte size as the upload is read, the pixel count from
the image header (``Image.open`` does not decode), so a decompression bomb (a small file that expands to
gigabytes) gets a 413 instead of exhausting memory.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from xraydet.errors import XrayDetError
from xraydet.inference.base import NonFinitePixels, to_rgb
from xraydet.ultralytics_env import pil_open

# Formats a scanner export or a test client plausibly sends; others (EPS, PDF ...) could call external tools.
FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM")


# Leading bytes of the accepted formats: a file that starts like one of them but does not open is a corrupt
# image (400), not an unsupported format (415).
_MAGIC: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("JPEG", (b"\xff\xd8\xff",)),
    ("PNG", (b"\x89PNG\r\n\x1a\n",)),
    ("GIF", (b"GIF87a", b"GIF89a")),
    ("TIFF", (b"II*\x00", b"MM\x00*")),
    ("BMP", (b"BM",)),
    ("PPM", tuple(b"P" + bytes([d]) + bytes([ws]) for d in b"123456" for ws in b" \t\r\n")),
)


def sniff_format(data: bytes) -> str | None:
    """The accepted format ``data`` claims to be by its leading bytes, or ``None``.

    Example:
        >>> sniff_format(b"GIF89a..."), sniff_format(b"%PDF-1.4")
        ('GIF', None)
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for fmt, magics in _MAGIC:
        if data.startswith(magics):
            return fmt
    return None


def _pil_open(data: bytes) -> Image.Image:
    # PIL's own opener: Ultralytics' replacement would try to pip-install a HEIF plugin for an unknown upload.
    return pil_open(io.BytesIO(data), formats=FORMATS)


class ImageError(XrayDetError):
    """An upload that is not a usable image; ``status_code`` is what the API answers."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


def configure_pil(max_pixels: int) -> None:
    """Make sure PIL's own bomb check (it raises above twice its limit) never refuses what ours accepts.

    The limit is global to the process, so it is only ever raised: lowering it to one server's
    ``max_pixels`` would refuse images that another app, or any other code in the process, accepts. Ours
    is checked on the header before decoding, so it alone guards the server.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def decode_image(data: bytes, max_pixels: int, filename: str = "upload") -> np.ndarray:
    """Decode an uploaded image into an ``HxWx3`` RGB ``uint8`` array.

    Raises:
        ImageError: 400 empty/truncated/corrupt (a file that starts like a supported format but does not
            open is corrupt), 413 too many pixels, 415 not an image in a supported format.

    Example:
        >>> buf = io.BytesIO(); Image.new("L", (4, 3)).save(buf, "PNG")
        >>> decode_image(buf.getvalue(), 100).shape
        (3, 4, 3)
    """
    if not data:
        raise ImageError(f"{filename}: empty file (0 bytes)", 400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = _pil_open(data)
        except Image.DecompressionBombError as err:
            raise ImageError(f"{filename}: image too large ({err})", 413) from err
        except UnidentifiedImageError as err:
            claimed = sniff_format(data)
            if claimed is not None:
                raise ImageError(
                    f"{filename}: corrupt image (starts like a {claimed} but does not open)", 400
                ) from err
            raise ImageError(
                f"{filename}: not an image in a supported format ({', '.join(FORMATS)})", 415
            ) from err
        except Exception as err:  # broken headers surface as many exception types inside PIL's plugins
            raise ImageError(f"{filename}: corrupt image header ({type(err).__name__}: {err})", 400) from err
        with im:
            w, h = im.size
            if w < 1 or h < 1:
                raise ImageError(f"{filename}: image has no pixels ({w}x{h})", 400)
            if w * h > max_pixels:
                raise ImageError(
                    f"{filename}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}", 413
                )
            try:
                im.load()
                return to_rgb(im)
            except NonFinitePixels as err:
                raise ImageError(f"{filename}: not a usable scan: {err}", 400) from err
            except Image.DecompressionBombError as err:
                raise ImageError(f"{filename}: image too large ({err})", 413) from err
            except MemoryError:
                raise
            except Exception as err:  # truncated or corrupt data: OSError mostly, but plugins vary
                raise ImageError(f"{filename}: truncated or corrupt image data ({err})", 400) from err

