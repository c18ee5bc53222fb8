"""``resume_training``: continue a run killed at any point, or extend a finished one to more epochs.

The newest usable checkpoint is found (see :mod:`xraydet.training.checkpoint_files`), ``results.csv`` is cut
back to that epoch, hook states are restored from ``state.json`` (epochs they missed are replayed from
``results.csv``), and Ultralytics resumes from a prepared copy of the checkpoint whose ``train_args``
carry the new epoch target. The same run folder and MLflow run continue.

A checkpoint older than the run's record (``save_every``, a torn ``last.pt``: an older ``epochNNN.pt`` is
used, or verdicts of an epoch that never ended) makes the hooks forget the epochs after it
(:func:`rewind_hooks`). A run a hook stopped (the gate's STOP, a NaN loss, a red flag with
``action: stop``; not a timeout) stays stopped on a plain resume: it is finished as ``stopped`` without
training. Pass ``epochs`` to train on anyway. A run killed after its last epoch's checkpoint but before its
summary (in Ultralytics' final validation, say) is only finished: its summary is written, with the status it
would have ended with. So is a resume (an extension, a rewind) killed so: the summary from before it, which
lacks its epochs or its resume, is rewritten, not returned. A ``best.pt`` torn by the kill is restored from
an intact checkpoint of its epoch; if none holds it, finishing raises, and a resume that trains on sets it
aside (see :func:`~xraydet.training.checkpoint_files.check_best_weights`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from xraydet.errors import XrayDetError
from xraydet.io import atomic_write_yaml
from xraydet.training.checkpoint_files import (
    check_best_weights,
    find_resume_checkpoint,
    prepare_resume_checkpoint,
)
from xraydet.training.history import is_validated, read_results_csv, truncate_results_csv
from xraydet.training.job import job_from_dict
from xraydet.training.state import RunState
from xraydet.training.summary import RunResult, best_record, load_run_result
from xraydet.training.trainer import execute, judged_epoch, rewind_hooks, stop_verdict_on_record

log = logging.getLogger(__name__)


def resume_training(run_dir: Path, epochs: int | None = None) -> RunResult:
    """Continue ``run_dir`` to its planned epochs, or to ``epochs`` (which may extend a finished run).

    Raises:
        XrayDetError: not a run folder, no usable checkpoint, or ``epochs`` not above the epochs already done.

    Example:
        >>> result = resume_training(Path("runs/train/phase1-20261126-020000"), epochs=300)  # doctest: +SKIP
    """
    run_dir = Path(run_dir).resolve()
    state = RunState.load(run_dir)
    job_file = run_dir / "job.yaml"
    raw = yaml.safe_load(job_file.read_text(encoding="utf-8")) if job_file.is_file() else None
    if not isinstance(raw, dict):
        raise XrayDetError(f"{job_file}: missing or unreadable job file")
    planned = int(epochs or state.train_args.get("epochs") or raw.get("epochs") or 0)
    trained = read_results_csv(run_dir / "results.csv")
    last = int(trained[-1]["epoch"]) if trained else 0
    info = find_resume_checkpoint(run_dir)
    if (
        epochs is None
        and last >= planned > 0
        and info is not None
        and info.epochs_done >= last  # else killed between the last row and its checkpoint: train it again
        and not _summary_is_current(run_dir, state, last)
    ):  # killed after the last epoch (e.g. in the final validation, whose checkpoints are stripped)
        job = job_from_dict({**raw, "epochs": planned}, where=str(job_file))
        # Not stop_on_record: a stop verdict here came at the last epoch, which cuts nothing short, so the run
        # ends as it would have had it not been killed ("completed", or "timed_out" if the deadline cut it).
        return execute(job, run_dir, state, resume_from=None, stop_on_record=False, train=False)
    save_every = int(raw.get("save_every", 1) or 1)
    if info is None and (holds_weights(run_dir) or was_checkpointed(trained, save_every, planned)):
        raise XrayDetError(
            f"{run_dir}: no resumable checkpoint in weights/ (last.pt, resume.pt, epochNNN.pt missing, "
            "moved, torn or stripped); start a new run, e.g. with `model:` set to weights/last.pt"
        )
    # No weights, and none ever written (killed in its first epoch, or before its first checkpoint with
    # `save_every`): the run starts again from its beginning, in its folder, as an OOM retry with no
    # checkpoint yet does.
    checkpoint = info.epochs_done if info is not None else 0
    done = max(checkpoint, last)  # a torn last.pt lags
    if epochs is not None and epochs <= done:
        raise XrayDetError(f"{run_dir}: --epochs {epochs} must exceed the {done} epochs already done")
    if planned <= checkpoint:
        log.info(
            "%s already has all %d epochs; nothing to resume (pass epochs to extend it)", run_dir, planned
        )
        return load_run_result(run_dir)
    # before training on moves last.pt past it: the checkpoint a torn best.pt is restored from
    best = best_record(trained)
    check_best_weights(run_dir, int(best["epoch"]) if best else None, set_aside=True)
    raw["epochs"] = planned
    job = job_from_dict(raw, where=str(job_file))
    if epochs is not None:  # the run now aims at the new total; a later plain resume keeps it
        atomic_write_yaml(job_file, job.model_dump(mode="json"))
    truncate_results_csv(run_dir / "results.csv", checkpoint)
    state.train_args["epochs"] = planned
    # Verdicts of an epoch that never ended (a NaN loss's immediate stop) are forgotten with it when it is
    # trained again; a plain resume of a run they stopped trains nothing, so it keeps them.
    stays_stopped = epochs is None and stop_verdict_on_record(state) is not None
    if state.epoch > checkpoint or (judged_epoch(state) > checkpoint and not stays_stopped):
        rewind_hooks(job, run_dir, state, checkpoint)
    name = info.path.name if info is not None else None
    state.resumes.append(
        {"checkpoint": name, "from_epoch": checkpoint, "epochs": planned, "extended": bool(epochs)}
    )
    log.info("resuming %s from %s (epoch %d) to %d epochs", run_dir, name or "the start", checkpoint, planned)
    if info is None:  # Ultralytics writes to the run folder where it is now (it may have been moved)
        state.train_args.update(project=str(run_dir.parent), name=run_dir.name)
        return execute(job, run_dir, state, resume_from=None, stop_on_record=epochs is None, restart=True)
    source = prepare_resume_checkpoint(info, run_dir, epochs=planned, batch=state.train_args.get("batch"))
    return execute(job, run_dir, state, resume_from=source, stop_on_record=epochs is None)


def was_checkpointed(trained: list[dict[str, Any]], save_every: int, planned: int) -> bool:
    """Whether the epochs of ``results.csv`` include one that was written to ``last.pt``: a validated one, a
    ``save_every``-th or the last (weights missing now were moved or deleted, not never written).

    Example:
        >>> was_checkpointed([{"epoch": 1, "train_loss": 3.1}], save_every=3, planned=10)
        False
    """
    last = int(trained[-1]["epoch"]) if trained else 0
    return last >= min(save_every, planned) or any(is_validated(r) for r in trained)


def holds_weights(run_dir: Path) -> bool:
    """Whether ``run_dir/weights`` holds any weights (usable or not): something was trained and saved."""
    return any((run_dir / "weights").glob("*.pt"))


def _summary_is_current(run_dir: Path, state: RunState, last: int) -> bool:
    """Whether ``summary.json`` was written after the run's latest training: it ends at ``last``, the last
    epoch of ``results.csv``, and holds every resume on record.

    A resume killed before its summary (an extension or a rewind killed in the final validation) leaves the
    summary of the training before it: fewer epochs, or as many with older metrics (a rewind), and fewer
    resumes (each resume that trains is recorded in ``state.json`` before training). Nothing is written to
    mark it stale: whenever a resume is killed, only a summary that covers its training passes.
    """
    try:
        summary = load_run_result(run_dir)
    except XrayDetError:  # missing (or unreadable: it is rewritten)
        return False
    return summary.epochs_completed == last and len(summary.resumes) >= len(state.resumes)
