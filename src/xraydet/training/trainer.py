"""``run_training``: one job -> one run folder, one MLflow run, one ``RunResult``, whatever happens.

Run folder (``runs/train/<name>-<time>/`` unless given)::

    job.yaml        the resolved job (the gate's decision epoch made explicit)
    args.yaml       Ultralytics' resolved train arguments
    weights/        best.pt, last.pt, resume.pt (full state at the end), epochNNN.pt, summary.json
    results.csv, results.png, confusion_matrix*.png   (Ultralytics)
    state.json, verdicts.json, summary.json            (xraydet)

CUDA out of memory (``torch.cuda.OutOfMemoryError`` or a RuntimeError saying "out of memory") is retried
from the newest resumable checkpoint (or from scratch if there is none yet) with half the batch, down to the
job's ``min_batch`` (4); each retry is listed in ``RunResult.retries``. Ultralytics' own first-epoch batch
halving stays active underneath. A NaN/inf loss that Ultralytics would recover from an older ``last.pt``
(``save_every``) goes back to that checkpoint the same way, with the same batch (up to 3 times).

Out of memory in Ultralytics' final validation of ``best.pt`` (after the last epoch, every checkpoint already
written) trains nothing again: ``best.pt`` alone is validated again, into the run folder, with half the
validation batch, down to batch 1 (each try a retry with ``cause: oom-final-val``). If even batch 1 runs out
of memory, or that validation fails otherwise, the run keeps its status, training results and ``best.pt``, and
its ``stop_reason`` says that the final validation could not run, and why.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "true")

from xraydet.errors import ConfigError, XrayDetError
from xraydet.io import atomic_write_yaml
from xraydet.training.checkpoint_files import (
    CheckpointInfo,
    check_best_weights,
    find_resume_checkpoint,
    prepare_resume_checkpoint,
)
from xraydet.training.history import is_validated, read_results_csv, truncate_results_csv
from xraydet.training.hooks import (
    DecisionGate,
    HookBase,
    HookList,
    LoaderStarvedFlag,
    NanLossFlag,
    OscillationFlag,
    OverfitFlag,
    PeriodicCheckpoint,
    PlateauFlag,
    Timeout,
    TrainContext,
    Verdict,
    build_hook,
)
from xraydet.training.job import TrainJob
from xraydet.training.mlflow_logger import MlflowRunLogger
from xraydet.training.state import RunState
from xraydet.training.summary import RunResult, best_record, metrics_of, write_run_result
from xraydet.training.throughput import FIGURES, run_figures
from xraydet.training.ultralytics_bridge import (
    TrainOutcome,
    UltralyticsBridge,
    keep_resumable,
    strip_finished,
)
from xraydet.training.validation_cadence import StaleNanRecovery

log = logging.getLogger(__name__)


def build_job_hooks(job: TrainJob) -> HookList:
    """The job's hooks in their documented order: NaN, gate, red flags, checkpoints, timeout, extra hooks."""
    flags = job.red_flags
    hooks: list[HookBase] = []
    if flags.nan.enabled:
        hooks.append(NanLossFlag(action=flags.nan.action))
    if job.gate.enabled:
        g = job.gate
        hooks.append(DecisionGate(job.gate_epoch(), g.continue_above, g.stop_below, g.metric, g.on_stop))
    if flags.oscillation.enabled:
        o = flags.oscillation
        hooks.append(
            OscillationFlag(o.metrics, o.window, o.min_sign_change_ratio, o.min_rel_amplitude, o.action)
        )
    if flags.plateau.enabled:
        p = flags.plateau
        hooks.append(PlateauFlag(p.metric, p.patience, p.min_delta, p.action))
    if flags.overfitting.enabled:
        f = flags.overfitting
        hooks.append(OverfitFlag(f.window, f.min_val_rise, f.action))
    if flags.loader_starved.enabled:
        s = flags.loader_starved
        hooks.append(LoaderStarvedFlag(s.window, s.max_wait_frac, loader_advice(job), s.action))
    if job.checkpoint_every:
        hooks.append(PeriodicCheckpoint(job.checkpoint_every))
    if job.timeout_s:
        hooks.append(Timeout(job.timeout_s))
    hooks.extend(build_hook(spec.name, spec.params) for spec in job.hooks)
    return HookList(hooks)


def loader_advice(job: TrainJob) -> str:
    """What a starved loader's warning tells the user to change in ``job``.

    Judged on the train arguments the job resolves to (preset < job fields < overrides): a RAM cache the
    preset already sets is not advised again, and on the CPU (or MPS), where Ultralytics loads the data in the
    training process itself (it sets ``workers`` to 0 there), more workers are not advised.

    Example:
        >>> loader_advice(TrainJob(name="x", data="d.yaml", workers=4))
        'raise `workers` (4 now) or cache decoded images (`cache: ram`)'
        >>> loader_advice(TrainJob(name="x", data="d.yaml", preset="xray-fast", workers=14))
        'raise `workers` (14 now)'
    """
    try:
        args = job.train_args()
    except ConfigError:  # a preset file that cannot be found from here: the job's own fields
        args = {"workers": job.workers, "device": job.device, **job.overrides}
    on_cpu = str(args.get("device") or "").strip().lower() in {"cpu", "mps"}
    fixes = []
    if not on_cpu:
        workers = args.get("workers")
        now = "Ultralytics' default 8" if workers is None else workers
        fixes.append(f"raise `workers` ({now} now)")
    cache = args.get("cache")
    if not (cache is True or str(cache).strip().lower() == "ram"):
        fixes.append("cache decoded images (`cache: ram`)")
    costly = {
        key: value
        for key, value in job.xray_augment.model_dump().items()
        if key in ("threat_projection", "rot90") and value
    }
    if costly:
        listed = ", ".join(f"{k} {v}" for k, v in costly.items())
        fixes.append(f"lower the loader's costliest X-ray augmentations (xray_augment: {listed})")
    advice = " or ".join(fixes) if len(fixes) < 3 else ", ".join(fixes[:-1]) + ", or " + fixes[-1]
    if on_cpu:
        note = "on the CPU Ultralytics loads the data in the training process (`workers` has no effect)"
        advice = f"{note}: {advice}" if advice else note
    return advice


def default_run_dir(job: TrainJob) -> Path:
    from xraydet.tracking import runs_root

    base = runs_root() / "train" / f"{job.name}-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_training(job: TrainJob, run_dir: Path | None = None) -> RunResult:
    """Train ``job`` into ``run_dir`` (a new folder under ``runs/train/`` by default) and return its result.

    Input errors raise :class:`~xraydet.errors.ConfigError` before anything starts; failures during training
    are returned as ``status="failed"`` with the reason (the summary is written either way). A ``best.pt``
    that does not load at the end is restored from a checkpoint of its epoch, or raises
    :class:`~xraydet.errors.XrayDetError` (no summary then; see :func:`check_best_weights`).

    Example:
        >>> result = run_training(load_job("examples/jobs/smoke.yaml"))  # doctest: +SKIP
        >>> result.status, result.verdict("decision_gate").decision  # doctest: +SKIP
        ('completed', 'continue')
    """
    run_dir = Path(run_dir).resolve() if run_dir is not None else default_run_dir(job)
    if (run_dir / "state.json").exists() or (run_dir / "weights").exists():
        raise ConfigError(f"{run_dir} already holds a run; resume it with `xraydet train --resume {run_dir}`")
    if job.device is not None:  # a device this machine lacks fails here, before a run folder or MLflow run
        from xraydet.inference.ultralytics_backend import check_device

        check_device(job.device, setting="the job's device")
    run_dir.mkdir(parents=True, exist_ok=True)
    # made explicit in job.yaml; under `time` a default one follows Ultralytics' plan until the gate judges
    job = job.model_copy(update={"gate": job.gate.model_copy(update={"decision_epoch": job.gate_epoch()})})
    if job.gate.enabled and not job.time_budget() and (job.gate.decision_epoch or 0) > job.epochs:
        log.warning(
            "decision epoch %s is after the last epoch (%d): the gate will not fire",
            job.gate.decision_epoch,
            job.epochs,
        )
    atomic_write_yaml(run_dir / "job.yaml", job.model_dump(mode="json"))
    args = job.train_args()
    args.update(project=str(run_dir.parent), name=run_dir.name, exist_ok=True, save_period=-1)
    state = RunState(train_args=args)
    return execute(job, run_dir, state, resume_from=None)


def execute(
    job: TrainJob,
    run_dir: Path,
    state: RunState,
    resume_from: Path | None,
    *,
    stop_on_record: bool = False,
    train: bool = True,
    restart: bool = False,
) -> RunResult:
    """Run (or continue) training with hooks, OOM retries, MLflow and the summary. Used by resume too.

    ``stop_on_record``: if a hook's stop verdict (not a timeout) is on record, or comes up while replaying
    missed epochs, finish as ``stopped`` without training (a plain resume of a run a hook stopped).
    ``train=False``: every epoch is done (the run was killed before its summary): replay what the hooks
    missed, then write the summary, with the status the run would have ended with (``timed_out`` when the
    deadline cut its last epoch short). ``restart``: a resume with no checkpoint yet trains from the start
    (``resume_from`` None) and forgets what MLflow holds of the run's epochs.
    """
    t0 = time.monotonic()
    job = job.model_copy(update={"gate": job.gate.model_copy()})  # its decision epoch may be set below
    hooks = build_job_hooks(job)
    hooks.load_state_dict(state.hooks)
    history = read_results_csv(run_dir / "results.csv") if resume_from is not None or not train else []
    ctx = TrainContext(run_dir=run_dir, epochs=planned_epochs(state), start_epoch=len(history))
    _replay(hooks, ctx, history, state)
    recorded_stop = stop_verdict_on_record(state) if stop_on_record else None
    mlflow = MlflowRunLogger(job.experiment, run_dir.name, state.mlflow_run_id)
    state.mlflow_run_id = mlflow.run_id
    mlflow.log_params({"job": job.model_dump(mode="json"), "train": state.train_args})
    mlflow.set_tags({"xraydet.run_dir": run_dir, "xraydet.preset": job.preset, "xraydet.model": job.model})
    if resume_from is not None or restart:  # the epochs after its checkpoint (cut from results.csv) again
        forget_epochs_after(mlflow, state, ctx.start_epoch)
    state.save(run_dir)

    def on_epoch(ctx: TrainContext, record: dict[str, Any], verdicts: list[Verdict]) -> None:
        state.epoch, state.epochs_planned = int(record["epoch"]), ctx.epochs
        fix_decision_epoch(job, hooks, run_dir)
        if ctx.batch_size is not None and ctx.batch_size != state.train_args.get("batch"):
            # Ultralytics' auto-batch, or its own first-epoch halving: a resume or an OOM retry must not go
            # back to a batch that ran out of memory
            log.warning(
                "training with batch %d, not the %s asked for (Ultralytics' choice)",
                ctx.batch_size,
                state.train_args.get("batch"),
            )
            state.train_args["batch"] = ctx.batch_size
        state.hooks = hooks.state_dict()
        state.verdicts.extend(verdicts)
        figures = {k: record[k] for k in FIGURES if k in record}
        if figures:
            start_up = state.epoch == ctx.start_epoch + 1
            state.loop_figures[state.epoch] = {**figures, **({"start_up": True} if start_up else {})}
        _log_epoch(mlflow, state, record)
        mlflow.log_verdicts(verdicts)
        state.save(run_dir)

    bridge = UltralyticsBridge(
        hooks,
        ctx,
        on_epoch,
        val_every=job.val_every,
        augment=job.xray_augment.augment(),
        save_every=job.save_every,
    )
    outcome: TrainOutcome | None = None
    status, reason = "failed", None
    try:
        if recorded_stop is not None:
            status, reason = (
                "stopped",
                f"{recorded_stop.hook} at epoch {recorded_stop.epoch}: {recorded_stop.reason}",
            )
            log.warning(
                "%s stopped this run at epoch %d; not training on (resume with more epochs to go on anyway)",
                recorded_stop.hook,
                recorded_stop.epoch,
            )
        elif not train:
            last = int(history[-1]["epoch"]) if history else 0
            # the stop the bridge acted on first in the last epoch, as training would have ended on it
            ended = next((v for v in state.verdicts if v.decision == "stop" and v.epoch == last), None)
            status, reason = _status(
                TrainOutcome(stop_verdict=ended, epochs_done=last),
                ctx.epochs,
                time_budget=bool(state.train_args.get("time")),
            )
            log.warning("%s: every epoch was trained before the run ended; writing its summary", run_dir)
        else:
            state.final_eval = {}  # the final validation of this training's best.pt, once it has run
            outcome = _train_with_oom_retry(bridge, job, run_dir, state, resume_from, mlflow)
            _keep_final_eval(state, outcome)
            status, reason = _status(outcome, ctx.epochs, time_budget=bool(state.train_args.get("time")))
            if outcome.final_eval_error:  # training's results stand; the reason says what is missing
                reason = f"{reason}; {outcome.final_eval_error}" if reason else outcome.final_eval_error
    except KeyboardInterrupt:
        reason = "interrupted"
        raise
    except Exception as err:
        log.exception("training failed")
        reason = f"{type(err).__name__}: {err}"
    finally:
        state.verdicts.extend(bridge.take_batch_verdicts())  # e.g. a NaN loss that stopped training at once
        if status == "completed":  # it ran to its end (or its `time` budget's) and its gate never judged
            state.verdicts.extend(gate_unreached(hooks, state.epoch, ctx.epochs))
        fix_decision_epoch(job, hooks, run_dir)
        state.wall_time_s += time.monotonic() - t0
        state.hooks = hooks.state_dict()
        state.save(run_dir)
        try:
            result = _result(run_dir, state, status, reason, ctx.epochs, mlflow.run_id)
        except XrayDetError as err:  # a torn best.pt nothing restores: no summary points at it
            mlflow.set_tags({"xraydet.stop_reason": str(err)})
            mlflow.finish("failed")
            raise
        for record in result.history:  # epochs replayed after a kill or redone after an OOM retry
            if record["epoch"] not in state.mlflow_epochs:
                _log_epoch(mlflow, state, record)
        write_run_result(result)
        state.save(run_dir)
        mlflow.log_verdicts(_latest_per_hook(state.verdicts))
        mlflow.set_tags({"xraydet.stop_reason": reason or ""})
        mlflow.log_artifacts(run_dir)
        mlflow.finish(status)
    log.info("run %s: %s (%d/%d epochs)", run_dir, status, result.epochs_completed, result.epochs_planned)
    return result


def planned_epochs(state: RunState) -> int:
    """The epochs the run's loop plans: its ``epochs``, or under ``time`` Ultralytics' latest re-plan (the
    decision gate's default epoch is half of it when the hooks are fed epochs they missed)."""
    if state.train_args.get("time") and state.epochs_planned:
        return state.epochs_planned
    return int(state.train_args["epochs"])


def fix_decision_epoch(job: TrainJob, hooks: HookList, run_dir: Path) -> None:
    """Once a gate that follows Ultralytics' plan (``time``, no ``gate.decision_epoch``) has judged, make the
    epoch it judged the job's decision epoch, in ``job`` and ``job.yaml``: an OOM retry, a resume or a rewind
    judges that epoch again, not half of a plan that has moved on since."""
    if not job.gate.enabled or job.gate.decision_epoch is not None:
        return
    gate = next((h for h in hooks.hooks if isinstance(h, DecisionGate) and h.name == "decision_gate"), None)
    if gate is None or gate.verdict is None:
        return
    job.gate.decision_epoch = gate.verdict.epoch  # the epoch it judged (the first validated from the target)
    atomic_write_yaml(run_dir / "job.yaml", job.model_dump(mode="json"))
    log.info("decision epoch %d (half of Ultralytics' plan) written to job.yaml", job.gate.decision_epoch)


def gate_unreached(hooks: HookList, last_epoch: int, epochs: int) -> list[Verdict]:
    """The warnings of the decision gates that never judged, in a run that ended at ``last_epoch``."""
    verdicts = [
        v for h in hooks.hooks if isinstance(h, DecisionGate) and (v := h.unreached(last_epoch, epochs))
    ]
    for v in verdicts:
        log.warning("[%s] epoch %d: %s - %s", v.hook, v.epoch, v.decision, v.reason)
    return verdicts


def forget_epochs_after(mlflow: MlflowRunLogger, state: RunState, epoch: int) -> None:
    """Drop the MLflow values of the epochs after ``epoch`` (trained again next), so that MLflow's history of
    each metric holds one value per epoch, the one ``results.csv`` holds (see :mod:`.mlflow_logger`)."""
    mlflow.forget_steps_after(epoch, logged_after=any(e > epoch for e in state.mlflow_epochs))
    state.mlflow_epochs = [e for e in state.mlflow_epochs if e <= epoch]


def _log_epoch(mlflow: MlflowRunLogger, state: RunState, record: dict[str, Any]) -> None:
    mlflow.log_epoch(record)
    if record["epoch"] not in state.mlflow_epochs:
        state.mlflow_epochs.append(int(record["epoch"]))


def is_cuda_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


MAX_NAN_RESTARTS = 3  # as Ultralytics' own NaN recovery, which gives up after 3 attempts


def _train_with_oom_retry(
    bridge: UltralyticsBridge,
    job: TrainJob,
    run_dir: Path,
    state: RunState,
    resume_from: Path | None,
    mlflow: MlflowRunLogger,
) -> TrainOutcome:
    args = dict(state.train_args)
    source = resume_from
    nan_restarts = 0
    final_val_error: str | None = None  # out of memory in Ultralytics' final validation of best.pt
    ended_at: tuple[CheckpointInfo, Verdict | None] | None = None  # the loop ended at this checkpoint
    first_epoch = bridge.ctx.start_epoch  # this process trains the epochs after it
    while True:
        try:
            return bridge.train(job.model, args if source is None else {}, resume_from=source)
        except Exception as err:
            if is_cuda_oom(err) and bridge.outcome.loop_finished:  # in final_eval: every epoch is trained
                final_val_error = _error_text(err)
                break  # out of the handler: the failed trainer's memory can be freed
            batch = bridge.ctx.batch_size or args.get("batch")  # Ultralytics may have halved it already
            if isinstance(err, StaleNanRecovery):  # go back to last.pt's epoch instead, as a whole
                if nan_restarts >= MAX_NAN_RESTARTS:
                    raise
                nan_restarts += 1
                new_batch, cause = batch, "nan"
            elif not is_cuda_oom(err) or not isinstance(batch, int):
                raise
            else:
                new_batch, cause = max(job.min_batch, batch // 2), "oom"
            info = find_resume_checkpoint(run_dir)
            if info is None and cause == "nan":  # nothing to go back to: fail, as Ultralytics' recovery would
                raise
            from_epoch = info.epochs_done if info is not None else 0
            # under `time` the loop's plan is Ultralytics' latest re-plan, not the job's epochs
            plan = bridge.ctx.epochs if args.get("time") else int(args["epochs"])
            trained = cause == "oom" and loop_ended(bridge.outcome, from_epoch, plan)
            # a hook's stop at the checkpoint's epoch: on record, or given just before another hook raised
            stopping = cause == "oom" and (
                stop_at(state, from_epoch, after=first_epoch) is not None
                or any(v.decision == "stop" and v.epoch == from_epoch for v in bridge.hooks.interrupted)
            )
            ends = info is not None and (trained or stopping)  # nothing is trained again
            if cause == "oom" and not ends and isinstance(batch, int) and batch <= job.min_batch:
                raise
            _log_restart(err, cause, batch, new_batch, from_epoch, ends)
            checkpoint = info.path if info else None
            _record_retry(state, cause, _error_text(err), batch, new_batch, from_epoch, checkpoint)
            if cause == "oom":
                args["batch"] = state.train_args["batch"] = new_batch
            bridge.ctx.attempt += 1
            # batch verdicts of an epoch the checkpoint holds: that epoch is replayed, not trained again
            state.verdicts.extend(v for v in bridge.take_batch_verdicts() if v.epoch <= from_epoch)
            truncate_results_csv(run_dir / "results.csv", from_epoch)
            forget_epochs_after(mlflow, state, from_epoch)
            _restart_hooks(bridge.hooks, bridge.ctx, job, run_dir, state, from_epoch)
            bridge.ctx.start_epoch = from_epoch
            # a hook's stop at the checkpoint's epoch (given again as the hooks replay it) ends the loop too
            stop = stop_at(state, from_epoch, after=first_epoch) if cause == "oom" else None
            if info is not None and (trained or stop is not None):
                ended_at = info, stop
                state.save(run_dir)
                break  # out of the handler, as above
            source = (
                None
                if info is None
                else prepare_resume_checkpoint(
                    info,
                    run_dir,
                    epochs=max(int(args["epochs"]), plan),
                    batch=new_batch if cause == "oom" else None,
                )
            )
            state.save(run_dir)
    if ended_at is not None:
        return _finish_at_checkpoint(bridge, run_dir, state, *ended_at, int(args["batch"]))
    return _retry_final_validation(bridge, run_dir, state, final_val_error or "CUDA out of memory")


def loop_ended(outcome: TrainOutcome, epoch: int, epochs: int) -> bool:
    """Whether Ultralytics' loop ended at ``epoch`` (a checkpoint's) in the failed attempt that ``outcome``
    describes: ``epochs``, the planned last one, or the epoch where its own early stopping (``patience``) or
    ``time`` budget ended it (a CUDA OOM in a hook of that epoch must not train past it)."""
    ended = outcome.loop_ends_at
    return epoch >= epochs or (ended is not None and epoch >= ended)


def _log_restart(
    err: Exception, cause: str, batch: Any, new_batch: Any, from_epoch: int, ended: bool
) -> None:
    if cause == "nan":
        log.warning("%s; going back to the checkpoint of epoch %d", err, from_epoch)
    elif ended:
        log.warning(
            "CUDA out of memory after the checkpoint of epoch %d, where the loop ended: nothing to train "
            "again",
            from_epoch,
        )
    else:
        log.warning(
            "CUDA out of memory at batch %d: retrying with batch %d from epoch %d",
            batch,
            new_batch,
            from_epoch,
        )


def stop_at(state: RunState, epoch: int, after: int = 0) -> Verdict | None:
    """The first stop verdict on record for ``epoch`` (a timeout's too), unless the run was extended from it
    or it is not after ``after`` (the epoch this process started from: an earlier process's timeout there is
    why it was resumed, not a stop of this one).

    The training loop ended at that epoch: an OOM retry from its checkpoint trains nothing more.
    """
    if epoch <= max(extended_at(state), after):
        return None
    return next((v for v in state.verdicts if v.decision == "stop" and v.epoch == epoch), None)


def _finish_at_checkpoint(
    bridge: UltralyticsBridge,
    run_dir: Path,
    state: RunState,
    info: CheckpointInfo,
    stop: Verdict | None,
    batch: int,
) -> TrainOutcome:
    """CUDA out of memory after the checkpoint of the epoch the loop ended on (its last epoch, Ultralytics'
    early stopping or ``time`` budget, or a hook's stop):
    in a hook's ``after_save`` or ``after_fit_epoch`` (an epoch's validation comes before its checkpoint: an
    OOM there trains the epoch again). Ultralytics would refuse to resume from it ("nothing to resume"), so
    nothing is trained again: the run ends as the loop would have, with ``resume.pt`` kept,
    ``last.pt``/``best.pt`` stripped and ``best.pt`` validated at twice ``batch`` (the halved train batch), as
    Ultralytics' validation loader is, and at half that on out of memory (:func:`_retry_final_validation`).
    An immediate stop (a NaN loss) ends it there.
    """
    outcome = bridge.outcome = TrainOutcome(
        stop_verdict=stop, epochs_done=info.epochs_done, loop_finished=True
    )
    if stop is not None and stop.immediate:
        return outcome
    keep_resumable(info.path)
    weights = run_dir / "weights"
    strip_finished(weights / "last.pt" if info.path.name == "last.pt" else None, weights / "best.pt")
    best = weights / "best.pt"
    if not best.is_file():
        return outcome
    outcome.val_batch = 2 * batch
    try:
        outcome.best_eval = bridge.validate(best, state.train_args, outcome.val_batch, run_dir)
    except Exception as err:
        if is_cuda_oom(err):
            return _retry_final_validation(bridge, run_dir, state, _error_text(err))
        log.warning("the final validation of best.pt at batch %d failed", outcome.val_batch, exc_info=True)
        outcome.final_eval_error = _final_eval_error(f"{_error_text(err)} (at batch {outcome.val_batch})")
        return outcome
    _keep_final_eval(state, outcome)
    state.save(run_dir)
    return outcome


def _record_retry(
    state: RunState,
    cause: str,
    error: str,
    batch_from: Any,
    batch_to: Any,
    from_epoch: int,
    checkpoint: Path | None,
) -> None:
    """Add a retry (``cause``: oom, nan, oom-final-val) to the run's record; attempts count from the first."""
    state.retries.append(
        {
            "attempt": len(state.retries) + 2,
            "cause": cause,
            "error": error,
            "batch_from": batch_from,
            "batch_to": batch_to,
            "from_epoch": from_epoch,
            "checkpoint": str(checkpoint) if checkpoint else None,
        }
    )


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err)[:300]}"


FINAL_VAL_OOM = "oom-final-val"  # the cause of a retry of the final validation alone


def _retry_final_validation(
    bridge: UltralyticsBridge, run_dir: Path, state: RunState, error: str
) -> TrainOutcome:
    """Ultralytics' final validation of ``best.pt`` ran out of CUDA memory: training is done (every epoch is
    in ``results.csv``, ``resume.pt`` holds the last one, ``last.pt``/``best.pt`` are stripped), so only that
    validation is run again, into ``run_dir``, with half the batch each time down to 1 (a validation needs no
    ``min_batch``: that is a training setting), each try recorded as a retry with ``cause: oom-final-val``.
    Its metrics become ``outcome.best_eval`` and, saved at once, ``state.final_eval``; if it cannot run (out
    of memory even at batch 1, or any other error), ``outcome.final_eval_error`` says why and the run ends on
    its training results.
    """
    outcome = bridge.outcome
    best = run_dir / "weights" / "best.pt"
    if outcome.best_eval or not best.is_file():  # validated already (the error came later), or no best.pt
        log.warning("CUDA out of memory after the last epoch, not in a validation of best.pt (%s)", error)
        return outcome
    train_batch = bridge.ctx.batch_size or state.train_args.get("batch")
    batch = outcome.val_batch or (2 * train_batch if isinstance(train_batch, int) and train_batch > 0 else 0)
    while batch > 1:
        new_batch = batch // 2
        _record_retry(state, FINAL_VAL_OOM, error, batch, new_batch, outcome.epochs_done, best)
        state.save(run_dir)
        log.warning(
            "CUDA out of memory in the final validation of best.pt at batch %d; training is done: validating "
            "best.pt again with batch %d",
            batch,
            new_batch,
        )
        batch = new_batch
        try:
            outcome.best_eval = bridge.validate(best, state.train_args, batch, run_dir)
        except Exception as err:  # training is done and best.pt intact: no error fails the run now
            if is_cuda_oom(err):
                error = _error_text(err)
                continue
            log.warning("the final validation of best.pt at batch %d failed", batch, exc_info=True)
            outcome.final_eval_error = _final_eval_error(f"{_error_text(err)} (at batch {batch})")
            return outcome
        _keep_final_eval(state, outcome)
        state.save(run_dir)  # a kill from here on keeps best.pt's metrics
        return outcome
    at = f"at batch {batch}" if batch > 0 else "with Ultralytics' batch"
    data = state.train_args.get("data") or "DATA"
    outcome.final_eval_error = _final_eval_error(
        f"CUDA out of memory {at} ({error}); validate it where more memory is free, e.g. on the CPU: "
        f"`xraydet eval {best} {data}`"
    )
    log.warning("%s", outcome.final_eval_error)
    return outcome


def _final_eval_error(why: str) -> str:
    return (
        f"the final validation of best.pt could not run: {why}; training finished and best.pt is kept, but "
        "best.pt's metrics (final_eval) were not measured"
    )


def _keep_final_eval(state: RunState, outcome: TrainOutcome) -> None:
    """``state.final_eval``: best.pt's metrics from the final validation of this training (Ultralytics' own,
    or the trainer's retry of it), empty if it has not run."""
    state.final_eval = metrics_of(outcome.best_eval)


def _restart_hooks(
    hooks: HookList, ctx: TrainContext, job: TrainJob, run_dir: Path, state: RunState, epoch: int
) -> None:
    """Give the hooks of an OOM retry the record up to its checkpoint's ``epoch``, as a resume would.

    The failed call may have stopped mid-epoch, inside a hook: hooks before it had judged that epoch, hooks
    after it had not, and none of their verdicts reached ``state.json``. So the hooks are built afresh (in
    the same :class:`HookList`, which the epoch listener holds) and restored from ``state.json``; epochs
    after the checkpoint are forgotten (:func:`rewind_hooks`), epochs up to it they missed are replayed.
    """
    if judged_epoch(state) > epoch:  # `save_every` or a torn last.pt: the checkpoint is older than the record
        rewind_hooks(job, run_dir, state, epoch)
    hooks.hooks = build_job_hooks(job).hooks
    hooks.load_state_dict(state.hooks)
    ctx.history = []
    _replay(hooks, ctx, read_results_csv(run_dir / "results.csv"), state)


def judged_epoch(state: RunState) -> int:
    """The latest epoch the run's record has judged: its hook state, or a verdict given during an epoch that
    never ended (a NaN loss's immediate stop, a failure after a batch verdict)."""
    return max([state.epoch, *(v.epoch for v in state.verdicts)])


def rewind_hooks(job: TrainJob, run_dir: Path, state: RunState, epoch: int) -> None:
    """Make the hooks' record match a checkpoint older than it (``save_every`` > 1, a torn ``last.pt``, or
    verdicts of an epoch that never ended).

    The verdicts of the epochs after ``epoch`` are dropped (those epochs are trained again and judged afresh),
    and the hooks' state is rebuilt by replaying the kept epochs of ``results.csv`` (already cut back to
    ``epoch``) into new hooks; the verdicts that replay gives again are on record already.
    """
    judged = judged_epoch(state)
    log.warning(
        "%s: the checkpoint (epoch %d) is older than the run's record (epoch %d); forgetting epochs %d-%d",
        run_dir,
        epoch,
        judged,
        epoch + 1,
        judged,
    )
    state.verdicts = [v for v in state.verdicts if v.epoch <= epoch]
    state.mlflow_epochs = [e for e in state.mlflow_epochs if e <= epoch]
    state.loop_figures = {e: f for e, f in state.loop_figures.items() if e <= epoch}
    hooks = build_job_hooks(job)
    ctx = TrainContext(run_dir=run_dir, epochs=planned_epochs(state), replay=True)
    for record in read_results_csv(run_dir / "results.csv"):
        ctx.history.append(record)
        ctx.epoch = int(record["epoch"])
        verdicts = hooks.call("after_fit_epoch", ctx, record)
        if ctx.epoch > state.epoch:  # an epoch the hook state never reached: its verdicts are not on record
            state.verdicts.extend(verdicts)
    state.hooks = hooks.state_dict()
    state.epoch = epoch


def stop_verdict_on_record(state: RunState) -> Verdict | None:
    """The stop verdict of a hook (timeouts excepted) that ended the run since it was last extended, if any.

    That is the first one: training ends at the first stop, as the bridge acts on it; later ones on record
    came from the same epoch (another hook) or from replaying it.
    """
    since = extended_at(state)
    stops = [
        v for v in state.verdicts if v.decision == "stop" and v.status != "timed_out" and v.epoch > since
    ]
    return stops[0] if stops else None


def extended_at(state: RunState) -> int:
    """The epoch the run's latest extension (``--epochs N``) started from; 0 if it was never extended."""
    return max((int(r.get("from_epoch", 0)) for r in state.resumes if r.get("extended")), default=0)


def _replay(hooks: HookList, ctx: TrainContext, history: list[dict[str, Any]], state: RunState) -> None:
    """Feed hooks the epochs they missed (killed between checkpoint and state write); fill ctx.history."""
    for record in history:
        ctx.history.append(record)
        if record["epoch"] > state.epoch:
            ctx.epoch, ctx.replay = int(record["epoch"]), True
            verdicts = hooks.call("after_fit_epoch", ctx, record)
            state.verdicts.extend(verdicts)
            state.epoch = int(record["epoch"])
            log.info("replayed epoch %d into hooks (%d verdicts)", record["epoch"], len(verdicts))
    ctx.replay = False


def _status(outcome: TrainOutcome, epochs: int, time_budget: bool = False) -> tuple[str, str | None]:
    """Status of a finished training process. ``time_budget``: Ultralytics' ``time`` argument ended it."""
    v = outcome.stop_verdict
    if v is not None and (v.status == "timed_out" or outcome.epochs_done < epochs):
        return v.status or "stopped", f"{v.hook} at epoch {v.epoch}: {v.reason}"
    if outcome.epochs_done >= epochs or time_budget:
        return "completed", None
    return "stopped", f"Ultralytics early stopping after {outcome.epochs_done} epochs (patience)"


def _latest_per_hook(verdicts: list[Verdict]) -> list[Verdict]:
    latest: dict[str, Verdict] = {}
    for v in verdicts:
        latest[v.hook] = v
    return list(latest.values())


def _result(
    run_dir: Path, state: RunState, status: str, reason: str | None, epochs: int, run_id: str
) -> RunResult:
    history = read_results_csv(run_dir / "results.csv")
    for record in history:  # the loop figures of each epoch, which Ultralytics' results.csv lacks
        figures = state.loop_figures.get(int(record["epoch"]), {})
        record.update({k: v for k, v in figures.items() if k in FIGURES})
    best = best_record(history)
    best_epoch = int(best["epoch"]) if best else None
    last_validated = next((r for r in reversed(history) if is_validated(r)), None)
    weights = run_dir / "weights"
    return RunResult(
        run_dir=run_dir,
        status=status,  # type: ignore[arg-type]
        stop_reason=reason,
        epochs_completed=int(history[-1]["epoch"]) if history else 0,
        epochs_planned=epochs,
        best_weights=check_best_weights(run_dir, best_epoch),
        last_weights=weights / "last.pt" if (weights / "last.pt").is_file() else None,
        final_metrics=metrics_of(last_validated) if last_validated else {},
        final_eval=state.final_eval,
        best_metrics=metrics_of(best) if best else {},
        best_epoch=best_epoch,
        history=history,
        throughput=run_figures(state.loop_figures),
        verdicts=state.verdicts,
        retries=state.retries,
        resumes=state.resumes,
        train_args=state.train_args,
        mlflow_run_id=run_id,
        wall_time_s=round(state.wall_time_s, 3),
    )
