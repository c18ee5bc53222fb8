"""Label inspection for ``xraydet data check``: each YOLO label line parsed and its box checked against the
class count and the unit square, as ``(code, message)`` findings with line numbers; a file mixing box and
polygon rows is a file-level finding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xraydet.data.dataset import DatasetError, class_out_of_range, parse_label_line
from xraydet.io import TextDecodeError, decode_text

COORD_TOLERANCE = (
    0.01  # Ultralytics accepts coordinates up to 1.01 and down to -0.01; beyond, it drops the image
)


def check_label_line(
    text: str, nc: int, width: int | None = None, height: int | None = None
) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
    """Check one non-empty label line; returns the ``(class, cx, cy, w, h)`` row if usable, and its problems.

    A row is usable for statistics when it parses and its class id is valid, even if its box is bad.

    Example:
        >>> row, found = check_label_line("9 0.5 0.5 0.1 0.1", nc=5)
        >>> row is None, found[0][0]
        (True, 'class-out-of-range')
    """
    try:
        row = parse_label_line(text, "", 0)  # rejects non-numbers and nan/inf
        values = [float(v) for v in text.split()[1:]]
    except (DatasetError, ValueError, OverflowError) as err:
        message = err.message if isinstance(err, DatasetError) else f"{err}: {text.strip()!r}"
        return None, [("label-syntax", message)]
    found: list[tuple[str, str]] = []
    cls = int(row[0])
    if cls >= nc:
        found.append(("class-out-of-range", class_out_of_range(cls, nc)))
    found.extend(check_box(values, width, height))
    return (row if cls < nc else None), found


def check_box(
    values: Sequence[float], width: int | None = None, height: int | None = None
) -> list[tuple[str, str]]:
    """Range and size checks of one box ``cx cy w h`` (or polygon ``x1 y1 x2 y2 ...``) in normalised units.

    Example:
        >>> [code for code, _ in check_box([0.5, 0.5, 0.0, 0.2])]
        ['box-degenerate']
        >>> [code for code, _ in check_box([1.3, 0.5, 0.1, 0.2])]
        ['box-outside']
    """
    found: list[tuple[str, str]] = []
    low, high = -COORD_TOLERANCE, 1 + COORD_TOLERANCE
    bad = [v for v in values if not low <= v <= high]
    if bad:
        found.append(("box-outside", f"coordinate(s) {', '.join(f'{v:g}' for v in bad)} outside [0, 1]"))
    if len(values) == 4:
        cx, cy, w, h = values
    else:
        xs, ys = values[0::2], values[1::2]
        cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    if w <= 0 or h <= 0:
        found.append(("box-degenerate", f"width {w:g}, height {h:g}: a box needs both > 0"))
        return found
    if not bad:
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        over = max(-x1, -y1, x2 - 1, y2 - 1)
        if over > COORD_TOLERANCE:
            found.append(("box-clipped", f"box reaches {over:.3f} past the image edge"))
    if width and height and (w * width < 1 or h * height < 1):
        found.append(("box-tiny", f"box is {w * width:.2f} x {h * height:.2f} px"))
    return found


@dataclass
class LabelInfo:
    exists: bool
    rows: np.ndarray  # usable (N, 5) rows
    problems: list[tuple[str, str, int | None]]  # (code, message, line)


def inspect_label_text(text: str, nc: int, width: int | None = None, height: int | None = None) -> LabelInfo:
    """Check every line of one label file's text (pure).

    Example:
        >>> info = inspect_label_text("0 0.5 0.5 0.2 0.2\\n0 0.1 0.1 0.3 0.1 0.3 0.4\\n", nc=1)
        >>> [(code, line) for code, _, line in info.problems]
        [('label-mixed', None)]
    """
    rows: list[np.ndarray] = []
    found: list[tuple[str, str, int | None]] = []
    seen: dict[tuple[str, ...], int] = {}
    first_box = first_polygon = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        n_fields = len(line.split())
        if n_fields == 5 and first_box is None:
            first_box = number
        if n_fields > 6 and first_polygon is None:  # Ultralytics' test for a segment row
            first_polygon = number
        row, line_problems = check_label_line(line, nc, width, height)
        found.extend((code, msg, number) for code, msg in line_problems)
        key = tuple(line.split())
        if key in seen:
            found.append(("box-duplicate", f"same as line {seen[key]}", number))
        else:
            seen[key] = number
            if row is not None:
                rows.append(row)
    if first_box is not None and first_polygon is not None:
        found.append(
            (
                "label-mixed",
                f"box rows (5 fields, e.g. line {first_box}) and polygon rows (e.g. line {first_polygon}) "
                "in one file: Ultralytics drops the image ('labels mix segment and detection rows')",
                None,
            )
        )
    return LabelInfo(True, np.stack(rows) if rows else np.zeros((0, 5)), found)


def read_label(path: Path, nc: int, width: int | None, height: int | None) -> LabelInfo:
    """Read and check one label file; a missing file is a background image, not an error here."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LabelInfo(False, np.zeros((0, 5)), [])
    except OSError as err:
        return LabelInfo(True, np.zeros((0, 5)), [("label-unreadable", f"{type(err).__name__}: {err}", None)])
    try:
        text = decode_text(data, path, "utf-8-sig")  # Ultralytics reads a UTF-8 BOM; so do we
    except TextDecodeError as err:
        return LabelInfo(True, np.zeros((0, 5)), [("label-unreadable", err.detail, err.line)])
    return inspect_label_text(text, nc, width, height)
