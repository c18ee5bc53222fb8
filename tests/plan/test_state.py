"""Output fingerprints: what makes a finished step count as changed (and what does not)."""

from __future__ import annotations

import os
from pathlib import Path

from xraydet.plan.state import StepRecord, fingerprint, fingerprint_files, outputs_intact


def make_set(root: Path) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        (root / "images" / split / "a.jpg").write_bytes(b"jpeg")
        (root / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    return root


def test_file_fingerprint_is_the_content_hash(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(b"abc")
    assert fingerprint(path) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    os.utime(path, (1, 1))  # touching a file does not change it
    assert fingerprint(path) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_folder_fingerprint_sees_added_removed_and_rewritten_files(tmp_path: Path) -> None:
    root = make_set(tmp_path / "set")
    first = fingerprint(root)
    assert first is not None and first.startswith("tree:") and fingerprint(root) == first
    # Ultralytics' label caches are derived: they do not count as a change
    (root / "labels" / "train.cache").write_bytes(b"cache")
    assert fingerprint(root) == first
    (root / "labels" / "val" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")  # rewritten (size differs)
    second = fingerprint(root)
    assert second != first
    (root / "images" / "val" / "b.jpg").write_bytes(b"x")
    assert fingerprint(root) != second
    (root / "images" / "val" / "b.jpg").unlink()
    assert fingerprint(root) == second


def test_outputs_intact_names_the_output_at_fault(tmp_path: Path) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    data = make_set(tmp_path / "set")
    record = StepRecord(id="s", kind="train", fingerprints=fingerprint_files({"best": weights, "data": data}))
    assert outputs_intact(record) == (True, "outputs intact")
    weights.write_bytes(b"other weights")
    ok, why = outputs_intact(record)
    assert not ok and why == f"output 'best' changed ({weights.resolve()})"
    weights.unlink()
    assert outputs_intact(record) == (False, f"output 'best' is gone ({weights.resolve()})")
