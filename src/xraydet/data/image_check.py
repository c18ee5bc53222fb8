"""Image-file inspection for ``xraydet data check``: one image's bytes checked for format, size, end marker
(truncation, trailing bytes) and EXIF orientation, and hashed, as ``(code, message)`` findings.

The format rules follow Ultralytics 8.4.190's ``check_image`` (``ultralytics/data/utils.py``): the format PIL
reads from the content, lower-cased, must be in ``IMG_FORMATS`` or be ``jpeg2000``, whatever the suffix; a
supported format under another suffix (a PNG named ``.jpg``) is read normally.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from xraydet.ultralytics_env import pil_open

MIN_IMAGE_SIDE = 10  # Ultralytics rejects smaller images
TAIL_SEARCH_BYTES = 1024  # where to look for an end marker followed by padding
# Content formats (PIL's ``im.format``, lower-cased) Ultralytics trains on: its IMG_FORMATS plus "jpeg2000".
ULTRALYTICS_FORMATS = frozenset(
    {
        "avif",
        "bmp",
        "dng",
        "heic",
        "heif",
        "jp2",
        "jpeg",
        "jpg",
        "mpo",
        "png",
        "tif",
        "tiff",
        "webp",
        "jpeg2000",
    }
)

_SUFFIX_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


def end_marker_status(fmt: str | None, data: bytes) -> str | None:
    """``"ok"``, ``"trailing"`` (marker followed by extra bytes), ``"missing"`` (truncated), or None if the
    format has no end marker this check knows.

    Example:
        >>> end_marker_status("JPEG", b"\\xff\\xd8...\\xff\\xd9"), end_marker_status("JPEG", b"\\xff\\xd8...")
        ('ok', 'missing')
    """
    markers = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}
    if fmt == "WEBP":  # RIFF header declares the size: 8 + little-endian uint32 at offset 4
        declared = 8 + int.from_bytes(data[4:8], "little") if len(data) >= 8 else -1
        return "ok" if len(data) == declared else ("trailing" if len(data) > declared else "missing")
    if fmt == "BMP":
        declared = int.from_bytes(data[2:6], "little") if len(data) >= 6 else -1
        return "ok" if len(data) == declared else ("trailing" if len(data) > declared else "missing")
    marker = markers.get(fmt or "")
    if marker is None:
        return None
    if data.endswith(marker):
        return "ok"
    return "trailing" if marker in data[-TAIL_SEARCH_BYTES:] else "missing"


@dataclass
class ImageInfo:
    """What one image's bytes say: its digest, size, format and problems."""

    digest: str | None = None
    width: int | None = None
    height: int | None = None
    fmt: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (code, message)


def inspect_image_bytes(data: bytes, suffix: str, deep: bool = False, name: str = "") -> ImageInfo:
    """Check one image given its bytes (pure: no file access). Never raises on bad content.

    ``name`` (the file name) stands in for the in-memory buffer in messages quoting PIL's errors.
    """
    info = ImageInfo(digest=hashlib.sha1(data, usedforsecurity=False).hexdigest())
    if not data:
        info.problems.append(("image-unreadable", "empty file (0 bytes)"))
        return info
    decode_error: Exception | None = None
    buffer = io.BytesIO(data)

    def said(err: Exception) -> str:  # PIL quotes the buffer's repr: name the file instead
        return str(err).replace(repr(buffer), repr(name) if name else "the data")

    try:
        with pil_open(buffer) as im:
            info.fmt, (info.width, info.height) = im.format, im.size
            orientation = im.getexif().get(0x0112) if info.fmt in ("JPEG", "MPO", "TIFF") else None
            if deep:
                try:
                    im.load()
                except Exception as err:  # any decoder failure on bad bytes is a finding, not a crash
                    decode_error = err
    except (UnidentifiedImageError, Image.DecompressionBombError) as err:
        info.problems.append(("image-unreadable", f"not an image PIL can open ({said(err)})"))
        return info
    except Exception as err:  # a header that makes PIL fail in any way is a finding, not a crash
        info.problems.append(
            ("image-unreadable", f"cannot read the header ({type(err).__name__}: {said(err)})")
        )
        return info
    status = end_marker_status(info.fmt, data)
    if status == "missing":
        info.problems.append(
            ("image-truncated", f"{info.fmt} ends without its end marker: the file is cut short")
        )
    elif decode_error is not None:
        info.problems.append(
            ("image-corrupt", f"pixels do not decode ({type(decode_error).__name__}: {said(decode_error)})")
        )
    if status == "trailing":
        info.problems.append(("image-trailing-bytes", f"{info.fmt} has extra bytes after its end marker"))
    if min(info.width or 0, info.height or 0) < MIN_IMAGE_SIDE:
        info.problems.append(("image-too-small", f"{info.width}x{info.height} px"))
    expected = _SUFFIX_FORMATS.get(suffix.lower())
    if info.fmt and info.fmt.lower() not in ULTRALYTICS_FORMATS:
        info.problems.append(
            (
                "image-format-unsupported",
                f"content is {info.fmt} (suffix {suffix}): Ultralytics drops the image "
                f"('Invalid image format {info.fmt}'); re-save it as JPEG or PNG",
            )
        )
    elif expected and info.fmt and info.fmt != expected and (expected, info.fmt) != ("JPEG", "MPO"):
        info.problems.append(("image-format-mismatch", f"content is {info.fmt} but the suffix is {suffix}"))
    if orientation not in (None, 1):
        info.problems.append(
            (
                "image-exif-rotated",
                f"EXIF orientation {orientation}: OpenCV rotates the image, PIL does not; re-save it upright",
            )
        )
    return info
