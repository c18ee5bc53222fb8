"""Per-epoch metric records in xraydet's names, read from Ultralytics' metric dicts or its ``results.csv``.

Hooks only ever see these flat records (``epoch`` 1-based, ``map50``, ``map50_95``, ``precision``, ``recall``,
``train_loss``/``val_loss`` sums and the individual ``train_box_loss`` ... ``val_dfl_loss``), so they can be
unit-tested on recorded histories without a trainer.

An epoch that was not validated (a job with ``val_every`` > 1) has no metric and no ``val_*`` keys at all:
Ultralytics would repeat the last validation's numbers there, and the bridge blanks them to NaN, which
:func:`normalize_row` drops, so no hook mistakes them for a measurement.

Example:
    >>> normalize_row({"epoch": 3, "metrics/mAP50(B)": 0.5, "train/box_loss": 1.0, "train/cls_loss": 2.0})
    {'epoch': 3, 'map50': 0.5, 'train_box_loss': 1.0, 'train_cls_loss': 2.0, 'train_loss': 3.0}
"""

from __future__ import annotations

import csv
import difflib
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

_RENAME = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "map50",
    "metrics/mAP50-95(B)": "map50_95",
    "time": "time_s",
}
METRIC_KEYS = ("map50", "map50_95", "precision", "recall")  # the headline metrics of an epoch
LOSS_TERMS = ("box", "cls", "dfl")  # a detector's loss terms, per split: train_box_loss ... val_dfl_loss
# Every figure an epoch record may hold that a gate or red flag can judge (job files are checked against it).
RECORD_KEYS = (
    *METRIC_KEYS,
    "train_loss",
    "val_loss",
    *(f"{split}_{term}_loss" for split in ("train", "val") for term in LOSS_TERMS),
    "lr_pg0",
    "lr_pg1",
    "lr_pg2",
)


def check_record_key(name: str) -> str:
    """A key of the per-epoch records hooks read (``map50``, ``val_loss``, ``lr_pg0``...), or ValueError.

    Example:
        >>> check_record_key("mAP50")
        Traceback (most recent call last):
        ...
        ValueError: unknown metric 'mAP50' (did you mean 'map50' or 'map50_95'?); an epoch record has ...
    """
    if name not in RECORD_KEYS:
        close = difflib.get_close_matches(name.lower(), sorted(RECORD_KEYS), n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"unknown metric '{name}'{hint}; an epoch record has {', '.join(RECORD_KEYS)}")
    return name


RecordKey = Annotated[str, AfterValidator(check_record_key)]  # a metric name a hook may judge


def _key(raw: str) -> str:
    raw = raw.strip()
    if raw in _RENAME:
        return _RENAME[raw]
    if raw.startswith(("train/", "val/")):
        split, _, name = raw.partition("/")
        return f"{split}_{name}"
    return raw.replace("/", "_")


def normalize_row(raw: dict[str, Any]) -> dict[str, Any]:
    """Rename one epoch's Ultralytics metrics and add ``train_loss``/``val_loss`` (sums of the loss terms)."""
    row: dict[str, Any] = {}
    for key, value in raw.items():
        name = _key(str(key))
        if name == "epoch":
            row[name] = int(float(value))
        else:
            try:
                row[name] = float(value)
            except (TypeError, ValueError):
                continue
    if "map50" in row and not is_finite(row["map50"]):  # not validated this epoch: no val figures at all
        row = {k: v for k, v in row.items() if k not in METRIC_KEYS and not k.startswith("val_")}
    for split in ("train", "val"):
        terms = [v for k, v in row.items() if k.startswith(f"{split}_") and k.endswith("_loss")]
        if terms:
            row[f"{split}_loss"] = float(sum(terms))
    return row


def is_validated(record: dict[str, Any]) -> bool:
    """Whether this epoch was validated (it carries metric or ``val_*`` figures).

    Example:
        >>> is_validated({"epoch": 4, "train_loss": 3.2}), is_validated({"epoch": 5, "map50": 0.4})
        (False, True)
    """
    return any(k in METRIC_KEYS or k.startswith("val_") for k in record)


def read_results_csv(path: str | Path) -> list[dict[str, Any]]:
    """All epochs of an Ultralytics ``results.csv`` as normalised records (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [normalize_row(r) for r in csv.DictReader(fh) if any((v or "").strip() for v in r.values())]


def truncate_results_csv(path: Path, last_epoch: int) -> None:
    """Drop rows after ``last_epoch`` (1-based), e.g. epochs a killed run logged but never checkpointed."""
    from xraydet.io import atomic_write_text

    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.strip() and int(float(ln.split(",")[0])) <= last_epoch]
    if len(kept) != len(lines):
        atomic_write_text(path, "\n".join(kept) + "\n")


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
