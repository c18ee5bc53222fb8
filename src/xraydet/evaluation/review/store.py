"""Review verdicts on disk: ``REPORT_DIR/review/verdicts.json``, rewritten atomically after every verdict.

Each verdict is saved the moment it is made, so closing the browser (or killing the server) loses nothing.
The file names the report it belongs to (``report_id``); the gate ignores verdicts of another report.
"""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xraydet.errors import XrayDetError
from xraydet.io import atomic_write_json

VERDICTS = ("correct", "wrong", "missed_threat")
VERDICTS_JSON = "verdicts.json"


def sample_items(records: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records drawn at random with ``seed`` (all of them, shuffled, when there are fewer)."""
    return random.Random(seed).sample(records, min(n, len(records)))


class VerdictStore:
    """Verdicts of one report's review, keyed by prediction record id. Thread-safe; every change is saved."""

    def __init__(
        self,
        review_dir: Path,
        report_id: str,
        verdicts: dict[str, dict[str, Any]] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.review_dir = Path(review_dir)
        self.report_id = report_id
        self.verdicts: dict[str, dict[str, Any]] = dict(verdicts or {})
        self.meta: dict[str, Any] = dict(meta or {})
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.review_dir / VERDICTS_JSON

    @staticmethod
    def exists(review_dir: Path) -> bool:
        return (Path(review_dir) / VERDICTS_JSON).is_file()

    @classmethod
    def open(cls, review_dir: Path) -> VerdictStore:
        """Read an existing ``verdicts.json``; a damaged file is an error naming it."""
        path = Path(review_dir) / VERDICTS_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            verdicts = data["verdicts"]
            if not isinstance(verdicts, dict) or any(
                v.get("verdict") not in VERDICTS for v in verdicts.values()
            ):
                raise ValueError(f"verdicts must map item ids to one of {', '.join(VERDICTS)}")
            return cls(Path(review_dir), str(data["report_id"]), verdicts, data.get("meta"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise XrayDetError(f"{path}: not a readable verdicts file ({err})") from err

    @classmethod
    def open_or_create(
        cls, review_dir: Path, report_id: str, meta: dict[str, Any] | None = None
    ) -> VerdictStore:
        """Resume the review of ``report_id`` or start an empty one (saved at once)."""
        if cls.exists(review_dir):
            store = cls.open(review_dir)
            if store.report_id != report_id:
                raise XrayDetError(
                    f"{store.path} holds verdicts for report {store.report_id}, not {report_id}; "
                    "move it away to review this report"
                )
            store.meta.update(meta or {})
            return store
        store = cls(Path(review_dir), report_id, meta=meta)
        store.save()
        return store

    def save(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:  # the caller holds the lock
        body = {
            "report_id": self.report_id,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "meta": self.meta,
            "counts": self._counts(),
            "verdicts": self.verdicts,
        }
        atomic_write_json(self.path, body)

    def set(self, item_id: str, verdict: str, image: str = "", note: str = "") -> dict[str, int]:
        """Record (or change) the verdict of one item and save; returns the new counts."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        with self._lock:
            self.verdicts[item_id] = {
                "verdict": verdict,
                "image": image,
                "note": note,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self._save()
            return self._counts()

    def snapshot(self) -> tuple[dict[str, str], dict[str, int]]:
        """A consistent copy of ``(item id -> verdict, counts)``, safe while other threads add verdicts."""
        with self._lock:
            return {k: v["verdict"] for k, v in self.verdicts.items()}, self._counts()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return self._counts()

    def _counts(self) -> dict[str, int]:  # the caller holds the lock
        counts = {v: 0 for v in VERDICTS}
        for entry in self.verdicts.values():
            counts[entry["verdict"]] += 1
        return {"reviewed": len(self.verdicts), **counts}
