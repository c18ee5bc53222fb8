"""Loc-token JSONL: PaliGemma detection strings, also used in OpenAI GPT-4o vision fine-tuning JSONL.

An answer lists objects as ``<locYMIN><locXMIN><locYMAX><locXMAX> class`` separated by `` ; ``. The four
tokens are **y first**, each a bin ``0..1023`` of a 1024-bin grid over the image side: coordinate
``= bin / 1024 * side`` (rows for y, columns for x). Sources: the PaliGemma model card ("1024 entries that
represent coordinates in normalized image-space (<loc0000>...<loc1023>)"), Google's PaliGemma inference
notebook (``<loc(y0)><loc(x0)><loc(y1)><loc(x1)>``, scale 1024) and Roboflow's GPT-4o detection guide, which
puts the same PaliGemma strings into the assistant turn of OpenAI's chat JSONL. See docs/data-formats.md.

Reading the tokens as ``x`` first over 1000 bins (Florence-2's convention) transposes every box, grows it by
2.4% and moves it away from the top-left corner (``bin / 1000 > bin / 1024``): that was the seed team's
converter bug.

Two record shapes are read, one JSON object per line:

* PaliGemma: ``{"image": "a.jpg", "prefix": "detect knife ; gun", "suffix": "<loc0100>... knife ; ..."}``
* OpenAI chat: ``{"messages": [..., {"role": "user", "content": [{"type": "image_url", "image_url":
  {"url": "a.jpg" | "https://.../a.jpg" | "data:image/jpeg;base64,..."}}]}, {"role": "assistant",
  "content": "<loc0100>... knife ; ..."}]}``

An embedded (``data:``) image is named by its line and by the format of its bytes as PIL identifies them, not
by the URL's media type (exports label PNG bytes ``image/jpeg``; a mismatch is noted). A data URL whose bytes
are not a JPEG, PNG, BMP, TIFF or WebP image (an SVG, say) is an error naming the line.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlparse

import numpy as np
from PIL import Image

from xraydet.data.dataset import DatasetError, read_text_file
from xraydet.data.formats import AnnotationSet, FormatError, Record
from xraydet.io import atomic_write_text
from xraydet.ultralytics_env import pil_open

DEFAULT_BINS = 1024
_OBJECT = re.compile(r"^\s*<loc(\d{4})><loc(\d{4})><loc(\d{4})><loc(\d{4})>(?:<seg\d{3}>)*\s*(.*?)\s*$")
_TOKEN = re.compile(r"<(?:loc|seg)\d+>")
_DATA_URL = re.compile(r"^data:([^,]*),(.*)$", re.DOTALL | re.IGNORECASE)
# The raster formats a YOLO data set holds (PIL's format name -> suffix; xraydet lists only these suffixes).
EMBEDDED_SUFFIXES = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp"}
_MEDIA_SUFFIXES = {"image/jpeg": "jpg", "image/jpg": "jpg", "image/png": "png", "image/bmp": "bmp"}
_MEDIA_SUFFIXES |= {"image/x-ms-bmp": "bmp", "image/tiff": "tif", "image/webp": "webp"}


def encode_box(xyxy: np.ndarray, width: int, height: int, bins: int = DEFAULT_BINS) -> str:
    """Four loc tokens (y first) for one pixel ``xyxy`` box; each coordinate rounds to the nearest bin.

    Example:
        >>> encode_box(np.array([100, 50, 300, 450]), 1024, 512)
        '<loc0100><loc0100><loc0900><loc0300>'
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    ymin, ymax = _side_bins(y1 / height, y2 / height, bins)
    xmin, xmax = _side_bins(x1 / width, x2 / width, bins)
    return "".join(f"<loc{b:04d}>" for b in (ymin, xmin, ymax, xmax))


def _side_bins(lo: float, hi: float, bins: int) -> tuple[int, int]:
    """The bins of one side's ends (fractions of the side): the nearest ones, clipped to ``0..bins-1``.

    An extent that would collapse onto one bin (under a bin wide, or past the last bin at the far edge) is
    given the one bin around it instead (``floor``/``ceil``), as :func:`parse_answer` refuses ``min == max``.

    Example:
        >>> _side_bins(0.25, 0.5, 1024), _side_bins(0.5001, 0.5003, 1024), _side_bins(0.9996, 1.0, 1024)
        ((256, 512), (512, 513), (1022, 1023))
    """
    a, b = (int(np.clip(round(v * bins), 0, bins - 1)) for v in (lo, hi))
    if b <= a and hi > lo:  # a positive extent rounded to nothing
        a = int(np.clip(math.floor(lo * bins), 0, bins - 2))
        b = int(np.clip(math.ceil(hi * bins), a + 1, bins - 1))
    return a, b


def decode_tokens(ymin: int, xmin: int, ymax: int, xmax: int, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Normalised ``xyxy`` (fractions of the side) from the four bins, given in token order (y first)."""
    return np.array([xmin, ymin, xmax, ymax], dtype=np.float64) / bins


def parse_answer(text: str, bins: int = DEFAULT_BINS, where: str = "") -> tuple[np.ndarray, list[str]]:
    """Parse ``<loc..>x4 class ; ...`` into normalised ``xyxy`` boxes and class names.

    An empty answer is an image without objects. Anything that is not four loc tokens followed by a class
    name raises, quoting the offending piece.

    Example:
        >>> boxes, labels = parse_answer("<loc0100><loc0100><loc0900><loc0300> knife")
        >>> (boxes * [1024, 512, 1024, 512]).tolist(), labels
        ([[100.0, 50.0, 300.0, 450.0]], ['knife'])
    """
    objects = [_parse_object(piece.strip(), bins, where) for piece in text.split(";") if piece.strip()]
    return np.array([box for box, _ in objects]).reshape(-1, 4), [label for _, label in objects]


def _parse_object(piece: str, bins: int, where: str) -> tuple[np.ndarray, str]:
    """One ``<loc..>x4 class`` piece as a normalised ``xyxy`` box and its class name (raises quoting it)."""
    match = _OBJECT.match(piece)
    if match is None:
        raise FormatError(f"{where}expected '<locYMIN><locXMIN><locYMAX><locXMAX> class', got {piece!r}")
    ymin, xmin, ymax, xmax = (int(g) for g in match.groups()[:4])
    label = match.group(5)
    if not label:
        raise FormatError(f"{where}object {piece!r} has no class name")
    if _TOKEN.search(label):  # a fifth loc token, or two objects without the ';' between them
        raise FormatError(f"{where}class name {label!r} holds a <loc>/<seg> token in {piece!r}")
    if max(ymin, xmin, ymax, xmax) >= bins:
        raise FormatError(f"{where}bin {max(ymin, xmin, ymax, xmax)} >= {bins} bins in {piece!r}")
    if ymax <= ymin or xmax <= xmin:
        raise FormatError(f"{where}empty box (ymin={ymin} xmin={xmin} ymax={ymax} xmax={xmax}) in {piece!r}")
    return decode_tokens(ymin, xmin, ymax, xmax, bins), label


def format_answer(
    boxes: np.ndarray, labels: list[str], width: int, height: int, bins: int = DEFAULT_BINS
) -> str:
    """The loc-token answer for pixel ``xyxy`` boxes (empty string for none).

    A class name that would not read back as itself (empty, padded, holding ``;`` or a loc token) raises.
    """
    for label in labels:
        if not label.strip() or label != label.strip() or ";" in label or _TOKEN.search(label):
            raise FormatError(f"class name {label!r} cannot be written in a loc-token answer")
    return " ; ".join(
        f"{encode_box(b, width, height, bins)} {label}" for b, label in zip(boxes, labels, strict=True)
    )


def _answer_and_image(obj: dict[str, Any], where: str) -> tuple[str, str]:
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list):
            raise FormatError(f"{where}'messages' should be a list")
        image = answer = None
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise FormatError(f"{where}messages[{i}] should be an object, got {msg!r:.80}")
            content = msg.get("content")
            if content is not None and not isinstance(content, str | list):
                raise FormatError(
                    f"{where}messages[{i}].content should be text or a list, got {content!r:.80}"
                )
            if msg.get("role") == "assistant":
                answer = (
                    content
                    if isinstance(content, str)
                    else " ".join(
                        c["text"]
                        for c in content or []
                        if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
                    )
                )
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "image_url":
                        url = part.get("image_url")
                        image = url.get("url") if isinstance(url, dict) else url
        if answer is None:
            raise FormatError(f"{where}no assistant message with the loc-token answer")
        if not image:
            raise FormatError(f"{where}no image_url content part in the messages")
        if not isinstance(image, str):
            raise FormatError(f"{where}image_url should be a URL string, got {image!r:.80}")
        return answer, image
    for key in ("image", "image_path", "file_name", "filename"):
        if isinstance(obj.get(key), str):
            image = obj[key]
            break
    else:
        raise FormatError(f"{where}no image reference (expected 'image' or OpenAI 'messages')")
    for key in ("suffix", "answer", "output", "label"):
        if isinstance(obj.get(key), str):
            return obj[key], image
    raise FormatError(f"{where}no loc-token answer (expected a 'suffix' field)")


def read(path: Path, bins: int = DEFAULT_BINS) -> AnnotationSet:
    """Read a loc-token JSONL file; boxes stay normalised until the image size is known."""
    path = Path(path)
    records = []
    try:
        text = read_text_file(path, "utf-8-sig")  # a UTF-8 BOM (Windows tools) is dropped
    except DatasetError as err:
        raise FormatError(err.message, path, err.line) from err
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}: "
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise FormatError(f"not valid JSON ({err.msg} at column {err.colno})", path, number) from err
        if not isinstance(obj, dict):
            raise FormatError("expected one JSON object per line", path, number)
        answer, image = _answer_and_image(obj, where)
        boxes, labels = parse_answer(answer, bins, where)
        file_name, data, notes = _image_ref(image, number, where)
        rec = Record(
            file_name,
            None,
            None,
            boxes,
            labels,
            f"{path}:{number}",
            image_bytes=data,
            notes=notes,
            normalized=True,
        )
        if isinstance(obj.get("width"), int) and isinstance(obj.get("height"), int):
            rec.width, rec.height = obj["width"], obj["height"]
        records.append(rec)
    return AnnotationSet(records)


def decode_data_url(url: str, where: str = "") -> tuple[str, bytes]:
    """The media type (``text/plain`` when none is given) and the bytes of a ``data:`` URL (RFC 2397).

    Example:
        >>> decode_data_url("data:image/png;base64,iVBO")
        ('image/png', b'\\x89PN')
    """
    match = _DATA_URL.match(url)
    if match is None:
        raise FormatError(f"{where}a data URL needs a ',' before its data, got {url[:40]!r}...")
    media, *params = match.group(1).split(";")
    if not any(p.strip().lower() == "base64" for p in params):
        return media.strip().lower() or "text/plain", unquote_to_bytes(match.group(2))
    try:
        return media.strip().lower() or "text/plain", base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError) as err:
        raise FormatError(f"{where}invalid base64 image data") from err


def sniff_suffix(data: bytes, media: str, where: str = "") -> str:
    """The file suffix for embedded image bytes, from the format PIL reads in them (not from ``media``).

    Bytes PIL cannot identify (an SVG, text) or a format a YOLO data set does not hold (a GIF) raise
    :class:`FormatError` naming ``where``.

    Example:
        >>> buffer = io.BytesIO()
        >>> Image.new("L", (4, 4)).save(buffer, "PNG")
        >>> sniff_suffix(buffer.getvalue(), "image/jpeg")
        'png'
    """
    try:
        with pil_open(io.BytesIO(data)) as im:
            fmt = im.format or ""
    except (OSError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise FormatError(
            f"{where}the data URL ({media}, {len(data)} bytes) is not a raster image PIL can read "
            f"({type(err).__name__}); embed a JPEG or PNG, or refer to an image file"
        ) from err
    if fmt not in EMBEDDED_SUFFIXES:
        raise FormatError(
            f"{where}the data URL ({media}) holds a {fmt} image; a YOLO data set holds "
            f"{', '.join(sorted(set(EMBEDDED_SUFFIXES) - {'MPO'}))}: re-encode it"
        )
    return EMBEDDED_SUFFIXES[fmt]


def _image_ref(image: str, number: int, where: str) -> tuple[str, bytes | None, list[str]]:
    """The image's file name, its bytes when embedded (a ``data:`` URL), and notes about it."""
    if image[:5].lower() == "data:":
        media, data = decode_data_url(image, where)
        suffix = sniff_suffix(data, media, where)
        name = f"image_{number:06d}.{suffix}"
        note = f"{where}data URL says {media} but holds {suffix.upper()} bytes: saved as {name}"
        return name, data, [note] if _MEDIA_SUFFIXES.get(media) != suffix else []
    parsed = urlparse(image)
    if parsed.scheme in ("http", "https", "file"):
        return unquote(Path(parsed.path).name), None, []  # no network: looked up by name in the images folder
    return image, None, []


def write(
    path: Path, records: list[Record], names: list[str], bins: int = DEFAULT_BINS, style: str = "paligemma"
) -> Path:
    """Write records as loc-token JSONL in the PaliGemma (``image/prefix/suffix``) or OpenAI chat style."""
    lines = []
    prompt = "detect " + " ; ".join(names)
    for rec in records:
        if rec.width is None or rec.height is None:
            raise FormatError(f"{rec.where}: image size unknown, cannot encode loc tokens")
        answer = format_answer(rec.boxes, rec.labels, rec.width, rec.height, bins)
        if style == "openai":
            obj: dict[str, Any] = {
                "messages": [
                    {"role": "system", "content": "You detect threats in X-ray baggage scans."},
                    {"role": "user", "content": prompt},
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": rec.file_name}}]},
                    {"role": "assistant", "content": answer},
                ]
            }
        else:
            obj = {"image": rec.file_name, "prefix": prompt, "suffix": answer}
        lines.append(json.dumps(obj))
    return atomic_write_text(path, "\n".join(lines) + "\n")
