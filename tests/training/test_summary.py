"""Run outcome bookkeeping: history records, best epoch, statuses, results.csv truncation, checkpoints."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from xraydet.training.checkpoint_files import find_resume_checkpoint
from xraydet.training.history import normalize_row, read_results_csv, truncate_results_csv
from xraydet.training.hooks import Verdict
from xraydet.training.summary import best_record, metrics_of
from xraydet.training.trainer import _status, is_cuda_oom
from xraydet.training.ultralytics_bridge import TrainOutcome

FIXTURES = Path(__file__).parent / "fixtures"


def test_real_results_csv_reads_into_xraydet_names() -> None:
    rows = read_results_csv(FIXTURES / "opixray_n64_160px_6ep.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    first = rows[0]
    assert first["val_box_loss"] == 1.19933 and first["map50_95"] == 0.0 and first["lr_pg0"] == 0.00027775
    assert first["train_loss"] == pytest.approx(0.09578 + 8.85697 + 0.05668)
    assert first["val_loss"] == pytest.approx(1.19933 + 22.3319 + 0.70689)


def test_normalize_row_keeps_nan_and_drops_text() -> None:
    row = normalize_row({"epoch": "2", "train/box_loss": "nan", "metrics/recall(B)": 0.5, "note": "x"})
    assert row["epoch"] == 2 and math.isnan(row["train_box_loss"]) and row["recall"] == 0.5
    assert "note" not in row and math.isnan(row["train_loss"])


@pytest.mark.parametrize(
    ("map50_95", "best_epoch"),
    [
        ([0.1, 0.3, 0.2], 2),
        # ties: Ultralytics rewrites best.pt whenever fitness equals the best: the latest tied epoch is in it
        ([0.0, 0.0, 0.0], 3),
        ([0.1, 0.3, 0.3, 0.2], 3),
        ([0.1, float("nan"), 0.4], 3),
        ([], None),
    ],
)
def test_best_record_is_ultralytics_fitness(map50_95: list[float], best_epoch: int | None) -> None:
    history = [{"epoch": i + 1, "map50_95": v, "map50": 2 * v} for i, v in enumerate(map50_95)]
    best = best_record(history)
    assert (best["epoch"] if best else None) == best_epoch
    if best:
        assert metrics_of(best) == {"map50_95": best["map50_95"], "map50": best["map50"]}


def _verdict(status: str | None = None) -> Verdict:
    return Verdict(hook="h", epoch=2, decision="stop", reason="r", status=status)


@pytest.mark.parametrize(
    ("verdict", "done", "planned", "expected"),
    [
        (None, 3, 3, "completed"),
        (None, 2, 3, "stopped"),  # Ultralytics' own patience
        (_verdict(), 2, 3, "stopped"),
        (_verdict(), 3, 3, "completed"),  # a stop at the last epoch changed nothing; the verdict stays
        (_verdict("timed_out"), 1, 3, "timed_out"),
        (_verdict("timed_out"), 3, 3, "timed_out"),  # the last epoch was cut short
    ],
)
def test_status(verdict: Verdict | None, done: int, planned: int, expected: str) -> None:
    assert _status(TrainOutcome(stop_verdict=verdict, epochs_done=done), planned)[0] == expected


def test_truncate_results_csv(tmp_path: Path) -> None:
    csv = tmp_path / "results.csv"
    shutil.copy(FIXTURES / "opixray_n64_160px_6ep.csv", csv)
    truncate_results_csv(csv, 4)
    assert [r["epoch"] for r in read_results_csv(csv)] == [1, 2, 3, 4]
    truncate_results_csv(csv, 10)
    assert len(read_results_csv(csv)) == 4


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("size mismatch"), False),
        (MemoryError("host"), False),
    ],
)
def test_is_cuda_oom(err: BaseException, expected: bool) -> None:
    assert is_cuda_oom(err) is expected


def test_resume_checkpoint_skips_torn_and_stripped_files(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    opt = {"state": {}, "param_groups": []}
    torch.save({"epoch": 4, "optimizer": opt, "train_args": {"epochs": 10}}, weights / "epoch005.pt")
    torch.save(
        {"epoch": -1, "optimizer": None, "train_args": {"epochs": 10}}, weights / "resume.pt"
    )  # stripped
    (weights / "last.pt").write_bytes(b"PK\x03\x04 torn by kill -9")
    info = find_resume_checkpoint(tmp_path)
    assert info is not None and info.path.name == "epoch005.pt"
    assert (info.epochs_done, info.epochs_planned) == (5, 10)
    torch.save({"epoch": 6, "optimizer": opt, "train_args": {"epochs": 10}}, weights / "last.pt")
    assert find_resume_checkpoint(tmp_path).path.name == "last.pt"  # type: ignore[union-attr]
    assert find_resume_checkpoint(tmp_path / "nothing") is None
