"""The typed records a data check produces: the problem codes (:data:`CODES`, each with its severity and
meaning), one :class:`Problem` per finding, and the :class:`CheckReport` that holds them all."""

from __future__ import annotations

from collections import defaultdict
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, computed_field

from xraydet.data.image_check import MIN_IMAGE_SIDE
from xraydet.data.stats import DatasetStats

# The class-imbalance threshold lives here, not in check.py beside class_problems (its only user),
# because the CODES text below quotes it and check.py imports this module.
IMBALANCE_RATIO = 0.1  # warn when the rarest class has fewer than this share of the commonest's instances


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


# code -> (severity, what it means). The code list in `xraydet data check --help` is generated from this
# (:func:`codes_help`).
CODES: dict[str, tuple[Severity, str]] = {
    "image-unreadable": (Severity.ERROR, "the file cannot be opened or identified as an image"),
    "image-truncated": (Severity.ERROR, "the end marker is missing: the file is cut short"),
    "image-corrupt": (Severity.ERROR, "the pixels do not decode although the file ends properly (--deep)"),
    "image-too-small": (Severity.ERROR, f"a side is under {MIN_IMAGE_SIDE} px (Ultralytics drops the image)"),
    "image-trailing-bytes": (
        Severity.WARNING,
        "bytes after the end marker (Ultralytics rewrites such JPEGs)",
    ),
    "image-format-unsupported": (
        Severity.ERROR,
        "the content is a format Ultralytics does not read (e.g. a GIF named .jpg): it drops the image",
    ),
    "image-format-mismatch": (
        Severity.WARNING,
        "the suffix does not match the content (e.g. a PNG named .jpg)",
    ),
    "image-exif-rotated": (
        Severity.WARNING,
        "EXIF orientation is set: tools disagree on which way labels go",
    ),
    "label-unreadable": (Severity.ERROR, "the label file cannot be read as UTF-8 text"),
    "label-syntax": (Severity.ERROR, "a line is not 'class cx cy w h' (or a polygon) of finite numbers"),
    "label-mixed": (
        Severity.ERROR,
        "a file mixes box rows and polygon rows (Ultralytics drops the image)",
    ),
    "class-out-of-range": (Severity.ERROR, "a class id is not an index into names"),
    "box-degenerate": (Severity.ERROR, "a box has zero or negative width or height"),
    "box-outside": (Severity.ERROR, "a coordinate lies outside [0, 1] beyond the 0.01 tolerance"),
    "box-clipped": (Severity.WARNING, "a box reaches past the image edge (training clips it)"),
    "box-tiny": (Severity.WARNING, "a box is under 1 px wide or high"),
    "box-duplicate": (Severity.WARNING, "the same line twice in one label file (Ultralytics drops the copy)"),
    "label-missing": (Severity.WARNING, "an image has no label file (trained as a background image)"),
    "label-orphan": (Severity.WARNING, "a label file has no image"),
    "duplicate-image": (Severity.WARNING, "identical image bytes twice within one split"),
    "split-leak": (Severity.ERROR, "identical image bytes in two splits (train/val leakage)"),
    "split-missing": (Severity.ERROR, "a split named in data.yaml has no folder or list"),
    "split-empty": (Severity.ERROR, "a split has no images"),
    "class-absent": (Severity.WARNING, "a class has no instances in a split"),
    "class-name-duplicate": (Severity.ERROR, "two class ids share a name (matching by name is ambiguous)"),
    "class-imbalance": (
        Severity.WARNING,
        f"the rarest class has < {IMBALANCE_RATIO:.0%} of the commonest's boxes",
    ),
}


def codes_help() -> str:
    """Every code with its severity and meaning, one per line (the epilog of ``xraydet data check --help``).

    Example:
        >>> codes_help().splitlines()[1]
        'image-unreadable (error): the file cannot be opened or identified as an image'
    """
    lines = [f"{code} ({severity.value}): {meaning}" for code, (severity, meaning) in CODES.items()]
    return "\n".join(["Problem codes:", *lines])


class Problem(BaseModel):
    """One finding: what (``code``), how bad, where (``file``, 1-based ``line``) and a message to act on."""

    code: str
    severity: Severity
    message: str
    file: str | None = None
    line: int | None = None
    split: str | None = None

    @property
    def where(self) -> str:
        if self.file is None:
            return ""
        return self.file if self.line is None else f"{self.file}:{self.line}"


def problem(
    code: str, message: str, file: Path | str | None = None, line: int | None = None, split: str | None = None
) -> Problem:
    """A :class:`Problem` whose severity comes from :data:`CODES`."""
    return Problem(
        code=code,
        severity=CODES[code][0],
        message=message,
        file=None if file is None else str(file),
        line=line,
        split=split,
    )


class CheckReport(BaseModel):
    """Everything ``check`` found; ``ok`` is True when there is no error (warnings allowed)."""

    dataset: str
    names: list[str]
    threats: list[str]
    splits: list[str]
    deep: bool
    n_images: int
    n_label_files: int
    stats: DatasetStats
    problems: list[Problem]
    elapsed_s: float

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.WARNING]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return not self.errors

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_errors(self) -> int:
        return len(self.errors)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_warnings(self) -> int:
        return len(self.warnings)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def images_per_s(self) -> float:
        return self.n_images / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def counts_by_code(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for p in self.problems:
            counts[p.code] += 1
        return dict(sorted(counts.items(), key=lambda kv: (CODES[kv[0]][0] != Severity.ERROR, kv[0])))
