"""Loc-token JSONL: PaliGemma detection strings, also used in OpenAI GPT-4o vision fine-tuning JSONL.

An answer lists objects as ``<locYMIN><locXMIN><locYMAX><locXMAX> class`` separated by `` ; ``. The four
tokens are **y first**, each a bin ``0..1023`` of a 1024-bin grid over the image side: coordinate
``= bin / 1024 * side`` (rows for y, columns for x). Sources: the PaliGemma model card ("1024 entries that
represent coordinates in normalized image-space (<loc0000>...<loc1023>)"), Google's PaliGemma inference
notebook (``<loc(y0)><loc(x0)><loc(y1)><loc(x1)>``, scale 1024) and Roboflow's GPT-4o detection guide, which
puts the same PaliGemma strings into the assistant turn of OpenAI's chat JSONL. See docs/data-formats.md.

Reading the tokens as ``x`` first over 1000 bins (Florence-2's convention) transposes every box and shrinks it
by 2.4%: that was the seed team's converter bug.

Two record shapes are read, one JSON object per line:

* PaliGemma: ``{"image": "a.jpg", "prefix": "detect knife ; gun", "suffix": "<loc0100>... knife ; ..."}``
* OpenAI chat: ``{"messages": [..., {"role": "user", "content": [{"type": "image_url", "image_url":
  {"url": "a.jpg" | "https://.../a.jpg" | "data:image/jpeg;base64,..."}}]}, {"role": "assistant",
  "content": "<loc0100>... knife ; ..."}]}``
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from xraydet.data.dataset import DatasetError, read_text_file
from xraydet.data.formats import AnnotationSet, FormatError, Record
from xraydet.io import atomic_write_text

DEFAULT_BINS = 1024
_OBJECT = re.compile(r"^\s*<loc(\d{4})><loc(\d{4})><loc(\d{4})><loc(\d{4})>(?:<seg\d{3}>)*\s*(.*?)\s*$")
_DATA_URL = re.compile(r"^data:image/(\w+);base64,(.*)$", re.DOTALL)


def encode_box(xyxy: np.ndarray, width: int, height: int, bins: int = DEFAULT_BINS) -> str:
    """Four loc tokens (y first) for one pixel ``xyxy`` box; each coordinate rounds to the nearest bin.

    Example:
        >>> encode_box(np.array([100, 50, 300, 450]), 1024, 512)
        '<loc0100><loc0100><loc0900><loc0300>'
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    values = [y1 / height, x1 / width, y2 / height, x2 / width]
    return "".join(f"<loc{int(np.clip(round(v * bins), 0, bins - 1)):04d}>" for v in values)


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
    boxes, labels = [], []
    for piece in text.split(";"):
        if not piece.strip():
            continue
        match = _OBJECT.match(piece)
        if match is None:
            raise FormatError(
                f"{where}expected '<locYMIN><locXMIN><locYMAX><locXMAX> class', got {piece.strip()!r}"
            )
        ymin, xmin, ymax, xmax = (int(g) for g in match.groups()[:4])
        label = match.group(5)
        if not label:
            raise FormatError(f"{where}object {piece.strip()!r} has no class name")
        if max(ymin, xmin, ymax, xmax) >= bins:
            raise FormatError(f"{where}bin {max(ymin, xmin, ymax, xmax)} >= {bins} bins in {piece.strip()!r}")
        if ymax <= ymin or xmax <= xmin:
            raise FormatError(
                f"{where}empty box (ymin={ymin} xmin={xmin} ymax={ymax} xmax={xmax}) in {piece.strip()!r}"
            )
        boxes.append(decode_tokens(ymin, xmin, ymax, xmax, bins))
        labels.append(label)
    return np.array(boxes).reshape(-1, 4), labels


def format_answer(
    boxes: np.ndarray, labels: list[str], width: int, height: int, bins: int = DEFAULT_BINS
) -> str:
    """The loc-token answer for pixel ``xyxy`` boxes (empty string for none)."""
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
        file_name, data = _image_ref(image, number, where)
        rec = Record(
            file_name, None, None, boxes, labels, f"{path}:{number}", image_bytes=data, normalized=True
        )
        if isinstance(obj.get("width"), int) and isinstance(obj.get("height"), int):
            rec.width, rec.height = obj["width"], obj["height"]
        records.append(rec)
    return AnnotationSet(records)


def _image_ref(image: str, number: int, where: str) -> tuple[str, bytes | None]:
    match = _DATA_URL.match(image)
    if match:
        ext = "jpg" if match.group(1).lower() == "jpeg" else match.group(1).lower()
        try:
            return f"image_{number:06d}.{ext}", base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError) as err:
            raise FormatError(f"{where}invalid base64 image data") from err
    parsed = urlparse(image)
    if parsed.scheme in ("http", "https", "file"):
        return unquote(Path(parsed.path).name), None  # no network: looked up by name in the images folder
    return image, None


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
