"""Finding and preparing the checkpoint a run continues from (resume, extension, OOM retry).

Candidates, in a run's ``weights/``: ``last.pt`` (holds the optimizer while training; stripped by Ultralytics
when a run ends, and possibly torn if the process was killed while writing it), ``resume.pt`` (a full copy the
bridge keeps when a run ends) and the periodic ``epochNNN.pt`` copies. The usable one with the most epochs
wins: it must load, hold an optimizer state and a non-negative ``epoch``.

Ultralytics refuses to resume a finished run and fixes ``epochs`` from the checkpoint's ``train_args``. We do
not fork its loop: we write a *copy* of the checkpoint with ``train_args`` edited (``epochs`` for an
extension, ``batch`` for an OOM retry, ``save_dir``/``project``/``name`` for the run folder) and let
Ultralytics resume from that copy. Its learning-rate schedule is a function of (epoch, epochs), so the
remaining epochs follow the schedule of a run planned for the new total, as if it had been planned so from the
start.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xraydet.io import atomic_write_bytes

log = logging.getLogger(__name__)

PREPARED = ".resume/from.pt"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epochs_done: int  # 1-based: the checkpoint was written after this many epochs
    epochs_planned: int


def _load(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_info(path: Path) -> CheckpointInfo | None:
    """What a checkpoint can resume from, or None if it cannot (unreadable, stripped, no optimizer)."""
    try:
        ckpt = _load(path)
    except Exception as err:  # a torn file raises anything from EOFError to pickle errors
        log.warning("checkpoint %s is unreadable (%s): skipped", path, type(err).__name__)
        return None
    epoch = ckpt.get("epoch", -1) if isinstance(ckpt, dict) else -1
    if epoch is None or epoch < 0 or ckpt.get("optimizer") is None:
        return None
    planned = int((ckpt.get("train_args") or {}).get("epochs", 0))
    return CheckpointInfo(path=path, epochs_done=int(epoch) + 1, epochs_planned=planned)


def find_resume_checkpoint(run_dir: Path) -> CheckpointInfo | None:
    """The usable checkpoint of ``run_dir`` with the most epochs (``last.pt`` first on ties)."""
    weights = Path(run_dir) / "weights"
    candidates = [
        weights / "last.pt",
        weights / "resume.pt",
        *sorted(weights.glob("epoch*.pt"), reverse=True),
    ]
    best: CheckpointInfo | None = None
    for path in candidates:
        if not path.is_file():
            continue
        info = checkpoint_info(path)
        if info is not None and (best is None or info.epochs_done > best.epochs_done):
            best = info
    return best


def prepare_resume_checkpoint(
    info: CheckpointInfo, run_dir: Path, epochs: int | None = None, batch: int | None = None
) -> Path:
    """Write ``run_dir/.resume/from.pt``: the checkpoint with ``train_args`` aimed at this run and target."""
    ckpt = _load(info.path)
    args = dict(ckpt.get("train_args") or {})
    run_dir = Path(run_dir).resolve()
    args.update(save_dir=str(run_dir), project=str(run_dir.parent), name=run_dir.name, exist_ok=True)
    if epochs is not None:
        args["epochs"] = int(epochs)
    if batch is not None:
        args["batch"] = int(batch)
    ckpt["train_args"] = args
    import torch

    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return atomic_write_bytes(run_dir / PREPARED, buffer.getvalue())
