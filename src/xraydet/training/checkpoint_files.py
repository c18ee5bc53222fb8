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

``best.pt`` is written in place too (right after ``last.pt``, with the same bytes, in each epoch that matches
the best fitness; again when ``final_eval`` strips it), so a kill can tear it. :func:`check_best_weights`
loads it once when a run ends (and before a resume trains on) and restores a torn one from an intact
checkpoint of the same epoch.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xraydet.errors import XrayDetError
from xraydet.io import atomic_write_bytes

log = logging.getLogger(__name__)

PREPARED = ".resume/from.pt"
BEST = "best.pt"
TORN = "best.pt.torn"  # a torn best.pt set aside by a resume that trains on


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    epochs_done: int  # 1-based: the checkpoint was written after this many epochs
    epochs_planned: int
    # its epoch had the best fitness so far, so Ultralytics wrote the same bytes to best.pt (True when the
    # checkpoint does not say: results.csv's best epoch decides then)
    holds_best: bool = True


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
    fitness, best = (ckpt.get("train_metrics") or {}).get("fitness"), ckpt.get("best_fitness")
    holds_best = fitness is None or best is None or fitness == best
    return CheckpointInfo(path, epochs_done=int(epoch) + 1, epochs_planned=planned, holds_best=holds_best)


def find_resume_checkpoint(run_dir: Path) -> CheckpointInfo | None:
    """The usable checkpoint of ``run_dir`` with the most epochs (``last.pt`` first on ties)."""
    best: CheckpointInfo | None = None
    for path in _candidates(Path(run_dir) / "weights"):
        info = checkpoint_info(path)
        if info is not None and (best is None or info.epochs_done > best.epochs_done):
            best = info
    return best


def _candidates(weights: Path) -> list[Path]:
    """The checkpoints of ``weights/`` that may hold a resumable epoch, ``last.pt`` first."""
    paths = [weights / "last.pt", weights / "resume.pt", *sorted(weights.glob("epoch*.pt"), reverse=True)]
    return [path for path in paths if path.is_file()]


def check_best_weights(run_dir: Path, best_epoch: int | None, *, set_aside: bool = False) -> Path | None:
    """``weights/best.pt`` if it loads (None if there is none); a torn one is restored or refused.

    A ``best.pt`` that does not load (a kill while Ultralytics wrote it) is replaced, atomically, by a copy of
    an intact checkpoint (``last.pt``, ``resume.pt``, ``epochNNN.pt``) of ``best_epoch``, the best validated
    epoch of ``results.csv``: Ultralytics wrote the same bytes to both. Such a copy keeps the optimizer state.

    Raises:
        XrayDetError: ``best.pt`` is torn and no intact checkpoint holds ``best_epoch``. With ``set_aside``
            (a resume that trains on, which writes a new ``best.pt`` at the first epoch as good as the lost
            one) it is renamed to ``best.pt.torn`` instead and None is returned.
    """
    run_dir = Path(run_dir)
    best = run_dir / "weights" / BEST
    if not best.is_file():
        return None
    try:
        loaded = _load(best)
    except Exception as err:  # a torn file raises anything from EOFError to pickle errors
        error = f"{type(err).__name__}: {str(err).split('. ')[0][:160]}"
    else:
        if isinstance(loaded, dict):
            return best
        error = f"not a checkpoint ({type(loaded).__name__})"
    source = _checkpoint_of_epoch(best.parent, best_epoch)
    if source is not None:
        atomic_write_bytes(best, source.read_bytes())
        log.warning(
            "%s was torn (%s): restored from %s, which holds the same epoch (%s)",
            best,
            error,
            source.name,
            best_epoch,
        )
        return best
    if set_aside:
        best.replace(best.with_name(TORN))
        log.warning(
            "%s was torn (%s) and no checkpoint holds its epoch (%s): set aside as %s; training on writes a "
            "new best.pt at the first epoch at least as good",
            best,
            error,
            best_epoch,
            TORN,
        )
        return None
    raise XrayDetError(_torn_best_message(run_dir, best, error, best_epoch))


def _checkpoint_of_epoch(weights: Path, epoch: int | None) -> Path | None:
    """An intact checkpoint of ``weights/`` written after ``epoch`` epochs whose bytes Ultralytics also
    wrote to best.pt (its fitness was the best so far), if any."""
    if epoch is None:
        return None
    for path in _candidates(weights):
        info = checkpoint_info(path)
        # holds_best: results.csv rounds its figures, so its best epoch may not be Ultralytics' best after all
        if info is not None and info.epochs_done == epoch and info.holds_best:
            return path
    return None


def _torn_best_message(run_dir: Path, best: Path, error: str, best_epoch: int | None) -> str:
    newest = find_resume_checkpoint(run_dir)
    lost = f"the weights of its best epoch ({best_epoch})" if best_epoch else "the weights of its best epoch"
    head = (
        f"{best} is torn ({error}), likely by a kill while Ultralytics wrote it; lost: {lost}, which no "
        "intact checkpoint in weights/ holds"
    )
    if newest is None:
        return (
            f"{head}; no other checkpoint is intact either (last.pt, resume.pt, epochNNN.pt missing, torn or "
            "stripped): start a new run"
        )
    return (
        f"{head}; intact: weights/{newest.path.name} (epoch {newest.epochs_done}). Use its weights instead "
        f"of best.pt, or train on with `xraydet train --resume {run_dir} --epochs N` (N above "
        f"{newest.epochs_done}), which sets the torn file aside as weights/{TORN} and writes a new best.pt "
        "at the first epoch at least as good as the lost one"
    )


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
