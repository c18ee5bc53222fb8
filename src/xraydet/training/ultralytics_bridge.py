"""The one module that touches Ultralytics trainer internals: callbacks in, stop requests out, offline guard.

Ultralytics (8.4.x) calls, per epoch: ``on_train_epoch_start``, ``on_train_batch_end`` (per batch),
``on_model_save`` (after ``last.pt``/``best.pt`` are written), ``on_fit_epoch_end``; after the loop,
``final_eval`` strips the optimizer from ``last.pt``/``best.pt`` and calls ``on_fit_epoch_end`` once more with
the best model's metrics. A graceful stop is ``trainer.stop = True``: Ultralytics checks it after each batch
(the epoch is cut, validated and saved) and after ``on_fit_epoch_end`` (the loop ends). An immediate stop
raises :class:`StopTraining` out of the callback, so nothing after it is trained or saved.

With ``val_every`` N > 1 the bridge validates only every Nth epoch, when a hook needs it (the decision gate's
epoch, the timeout's last epoch), when Ultralytics' ``time`` budget is about to end the run, and at the last
epoch (which Ultralytics forces). At ``on_train_epoch_end`` it sets ``trainer.args.val`` (every epoch, so a
``val: False`` saved in a checkpoint never outlives its epoch), and on a skipped epoch blanks the stale
metrics to NaN and ``trainer.fitness`` to None (``best_fitness`` to -inf before the first validation).
Otherwise Ultralytics would log the previous validation's numbers again and, finding the fitness unchanged,
overwrite ``best.pt`` with weights nobody validated.

With ``save_every`` N > 1 the bridge sets ``trainer.args.save`` the same way, so ``last.pt`` is written every
Nth epoch, on every validated epoch (``best.pt`` is written in the same step), where a hook wants a copy
(periodic ``epochNNN.pt`` checkpoints) and at the end; a resume starts from the latest one. A stop asked for
after Ultralytics' save step (a hook's ``after_fit_epoch``, Ultralytics' own ``time`` budget) on an epoch that
was not written has the bridge write it, so the run ends on a checkpoint of its last epoch. Ultralytics' NaN
recovery (reload ``last.pt``, train the epoch again) is let run only when ``last.pt`` holds the epoch before;
otherwise it raises :class:`~xraydet.training.validation_cadence.StaleNanRecovery` and the trainer goes back
to that checkpoint the way an OOM retry does, so no epoch is silently lost.

Because ``final_eval`` strips ``last.pt``, the bridge keeps a full copy as ``weights/resume.pt`` when the loop
ends, so a finished or stopped run can still be resumed or extended with its optimizer state. An error that
escapes ``final_eval`` (CUDA out of memory while validating ``best.pt``) comes after ``loop_finished``: the
trainer then validates ``best.pt`` on its own (:meth:`UltralyticsBridge.validate`) at a smaller batch than the
one the loop ended with (``TrainOutcome.val_batch``) instead of training again.
"""

from __future__ import annotations

import gc
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xraydet.training.history import is_validated, normalize_row
from xraydet.training.hooks.base import HookList, TrainContext, Verdict
from xraydet.training.throughput import LoopClock
from xraydet.training.validation_cadence import (
    guard_nan_recovery,
    save_due,
    skip_validation,
    time_budget_ends,
    time_budget_stops,
)
from xraydet.ultralytics_env import offline_guard

log = logging.getLogger(__name__)

RESUME_NAME = "resume.pt"


class StopTraining(Exception):
    """Raised from a callback to end training at once (e.g. NaN loss)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass
class TrainOutcome:
    """What one training process did, as seen from the callbacks."""

    stop_verdict: Verdict | None = None
    epochs_done: int = 0
    loop_finished: bool = False  # the epoch loop ended: only ``final_eval`` (and Ultralytics' plots) is left
    # the epoch Ultralytics ends its loop on (its last epoch, `patience`, `time`), known before the hooks of
    # that epoch's save and fit-epoch end run: an error they raise must not train past it
    loop_ends_at: int | None = None
    best_eval: dict[str, Any] = field(default_factory=dict)  # best.pt's metrics from the final validation
    val_batch: int | None = None  # the batch of the validation loader when the loop ended (final_eval's)
    final_eval_error: str | None = None  # why the final validation of best.pt could not run (set by trainer)


EpochListener = Callable[[TrainContext, dict[str, Any], list[Verdict]], None]


class UltralyticsBridge:
    """Feeds ``hooks`` from an Ultralytics model's callbacks and turns their verdicts into stop requests.

    Args:
        hooks: the run's hooks, called in order.
        ctx: the shared context (its ``history`` must already hold the epochs of a resumed run).
        on_epoch: called after the hooks with each epoch's record and the verdicts it produced (the trainer
            persists state and logs metrics there).
        val_every: validate every N epochs (plus the epochs hooks ask for, and the last); 1 = every epoch.
        save_every: write ``last.pt`` every N epochs (plus every validated epoch, the epochs hooks ask for,
            and the last); 1 = every epoch.
        augment: X-ray augmentations (an ``XrayAugment``) applied to the training scans; None = none.
    """

    def __init__(
        self,
        hooks: HookList,
        ctx: TrainContext,
        on_epoch: EpochListener | None = None,
        val_every: int = 1,
        augment: Any = None,
        save_every: int = 1,
    ) -> None:
        self.hooks = hooks
        self.ctx = ctx
        self.on_epoch = on_epoch
        self.val_every = max(int(val_every), 1)
        self.save_every = max(int(save_every), 1)
        self.augment = augment
        self.clock = LoopClock()
        self.outcome = TrainOutcome()
        self._batch_verdicts: list[Verdict] = []  # this epoch's, recorded with its record at its end
        self._saved_epoch: int | None = None  # the epoch this train() call last wrote to last.pt
        self._t0: float | None = None  # set by the first train(): OOM retries keep the clock (and deadline)

    # -- running --

    def train(
        self, model_source: str | Path, args: dict[str, Any], resume_from: Path | None = None
    ) -> TrainOutcome:
        """Train once (fresh, or resumed from a prepared checkpoint); hooks' ``after_train`` always runs.

        Exceptions from training (e.g. CUDA out of memory) propagate after ``after_train``; a
        :class:`StopTraining` raised by a hook ends the run normally with its verdict.
        """
        from ultralytics import YOLO

        self.outcome = TrainOutcome(epochs_done=self.ctx.start_epoch)
        self._batch_verdicts = []  # a failed attempt's epoch is trained again
        self._saved_epoch = None  # last.pt on disk may be anything (stripped, torn, older) until written
        self.ctx.batch_size = None  # known again after this attempt's first batch
        if self._t0 is None:
            self._t0 = time.monotonic()
        try:
            with offline_guard():
                model = YOLO(str(resume_from or model_source))
                self._attach(model)
                self.hooks.call("before_train", self._tick())
                trainer = self._trainer_class()
                if resume_from is not None:
                    model.train(trainer=trainer, resume=str(resume_from), **args)
                else:
                    model.train(trainer=trainer, **args)
        except StopTraining as stop:
            self.outcome.stop_verdict = stop.verdict
            log.warning("training stopped at once: %s", stop.verdict.reason)
        finally:
            self.hooks.after_train(self._tick())
        return self.outcome

    def _trainer_class(self) -> type | None:
        """Ultralytics' own trainer (None), or one whose training set applies the X-ray augmentations."""
        if self.augment is None or not self.augment.active:
            return None
        from xraydet.training.xray_augment import xray_trainer

        return xray_trainer(self.augment)

    def _tick(self) -> TrainContext:
        now = time.monotonic()
        self.ctx.elapsed_s = now - (self._t0 if self._t0 is not None else now)
        return self.ctx

    def _attach(self, model: Any) -> None:
        model.add_callback("on_pretrain_routine_end", self._on_pretrain_routine_end)
        model.add_callback("on_train_epoch_start", self._on_epoch_start)
        model.add_callback("on_train_batch_start", self._on_batch_start)
        model.add_callback("on_train_batch_end", self._on_batch_end)
        model.add_callback("on_train_epoch_end", self._on_train_epoch_end)
        model.add_callback("on_model_save", self._on_model_save)
        model.add_callback("on_fit_epoch_end", self._on_fit_epoch_end)

    # -- callbacks (each receives the Ultralytics trainer) --

    def _on_pretrain_routine_end(self, trainer: Any) -> None:
        guard_nan_recovery(trainer, lambda: self._saved_epoch)

    def _on_epoch_start(self, trainer: Any) -> None:
        ctx = self._tick()
        ctx.epoch, ctx.epochs, ctx.batch_index = trainer.epoch + 1, trainer.epochs, -1
        self.hooks.call("before_epoch", ctx)
        self.clock.epoch_start()

    def _on_batch_start(self, trainer: Any) -> None:
        self.clock.batch_start()

    def _on_batch_end(self, trainer: Any) -> None:
        self.clock.batch_end()
        ctx = self._tick()
        ctx.batch_index += 1
        ctx.batch_size = int(trainer.batch_size)
        loss = getattr(trainer, "loss", None)
        ctx.loss = None if loss is None else float(loss.detach().float().sum())
        verdicts = self.hooks.call("after_batch", ctx)
        self._batch_verdicts.extend(verdicts)
        self._act(verdicts, trainer)

    def _on_train_epoch_end(self, trainer: Any) -> None:
        self.clock.epoch_end(trainer.batch_size, len(trainer.train_loader.dataset))
        ctx = self._tick()
        ctx.epoch = trainer.epoch + 1
        validate = (
            ctx.epoch % self.val_every == 0 or self.hooks.need_validation(ctx) or time_budget_ends(trainer)
        )
        trainer.args.val = validate
        if not validate:
            skip_validation(trainer)
        trainer.args.save = save_due(trainer, self.save_every, validate) or self.hooks.need_checkpoint(ctx)

    def _on_model_save(self, trainer: Any) -> None:
        ctx = self._tick()
        ctx.epoch = self._saved_epoch = trainer.epoch + 1
        if trainer.stop or time_budget_stops(trainer):  # Ultralytics' stop so far, or its `time` re-plan next
            self.outcome.loop_ends_at = ctx.epoch
        self.hooks.call("after_save", ctx)

    def _on_fit_epoch_end(self, trainer: Any) -> None:
        if self.outcome.loop_finished:  # final_eval's extra call: metrics of best.pt, not a new epoch
            self.outcome.best_eval = eval_record(trainer.metrics or {})
            return
        ctx = self._tick()
        ctx.epoch, ctx.epochs = trainer.epoch + 1, trainer.epochs  # under `time`, as Ultralytics re-planned
        if trainer.stop:  # Ultralytics ends its loop here (last epoch, patience, time), before any hook fails
            self.outcome.loop_ends_at = ctx.epoch
            self._save_last(trainer, ctx.epoch)
        record = {**self._record(trainer), **self.clock.figures()}
        ctx.history.append(record)
        self.outcome.epochs_done = ctx.epoch
        judged = self.hooks.call("after_fit_epoch", ctx, record)  # if a hook raises, the batch ones wait
        verdicts = [*self.take_batch_verdicts(), *judged]
        for verdict in verdicts:
            _log_verdict(verdict)
        if self.on_epoch is not None:
            self.on_epoch(ctx, record, verdicts)
        self._act(verdicts, trainer)
        if trainer.stop:  # the loop ends after this callback; final_eval will strip last.pt next
            if not is_validated(record):
                log.warning("the run ends on epoch %d, which was not validated", ctx.epoch)
            self._save_last(trainer, ctx.epoch)
            self.outcome.loop_finished = True
            self.outcome.val_batch = _val_batch(trainer)
            keep_resumable(Path(trainer.last))

    def _save_last(self, trainer: Any, epoch: int) -> None:
        """Write ``last.pt`` for ``epoch``, where the loop ends, if Ultralytics' save step skipped it
        (``save_every``; a stop asked for after that step: a hook's verdict, Ultralytics' `time` re-plan)."""
        if self._saved_epoch != epoch:
            log.info("writing last.pt for epoch %d, where the run ends", epoch)
            if trainer.save_model():
                self._saved_epoch = epoch

    def validate(
        self, weights: Path, train_args: dict[str, Any], batch: int, run_dir: Path
    ) -> dict[str, Any]:
        """Validate ``weights`` on their own with ``batch``, as Ultralytics' final validation does, into
        ``run_dir``; returns the metrics as a record (``map50``...).

        The trainer's retry of a final validation that ran out of memory: training is done, so the saved
        ``best.pt`` is validated again with the validation settings of the run's ``train_args``, no trainer.
        Its outputs go to ``run_dir`` as it is now, not to the folder ``train_args`` name (where the run was
        created: a run folder copied or moved, then resumed, still names the old one there).
        """
        from ultralytics import YOLO

        release_memory()  # what the failed trainer held (its traceback is gone by now)
        with offline_guard():
            model = YOLO(str(weights))
            here = {"project": str(run_dir.parent), "name": run_dir.name, "exist_ok": True}
            metrics = model.val(**final_val_args(train_args), **here, batch=int(batch))
        del model
        release_memory()
        return eval_record(getattr(metrics, "results_dict", None) or {})

    def take_batch_verdicts(self) -> list[Verdict]:
        """Verdicts given after batches of the current epoch that are not on record yet (then forgotten).

        They are handed to the epoch listener with the epoch's own; when the epoch never ends (a hook stopped
        training at once, or training failed) the trainer takes them after training, and an OOM retry keeps
        those of an epoch its checkpoint holds (the epoch is replayed, not trained again).
        """
        verdicts, self._batch_verdicts = self._batch_verdicts, []
        return verdicts

    def _act(self, verdicts: list[Verdict], trainer: Any) -> None:
        for verdict in verdicts:
            if verdict.decision != "stop":
                continue
            if self.outcome.stop_verdict is None:
                self.outcome.stop_verdict = verdict
            if verdict.immediate:
                raise StopTraining(verdict)
            trainer.stop = True

    @staticmethod
    def _record(trainer: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {"epoch": trainer.epoch + 1}
        if trainer.tloss is not None:
            raw.update(trainer.label_loss_items(trainer.tloss, prefix="train"))
        raw.update(trainer.metrics or {})
        raw.update(getattr(trainer, "lr", {}) or {})
        row = normalize_row({k: _num(v) for k, v in raw.items()})
        row["epoch_time_s"] = float(getattr(trainer, "epoch_time", None) or 0.0)
        return row


def _num(value: Any) -> Any:
    return float(value.item()) if hasattr(value, "item") else value


def eval_record(metrics: dict[str, Any]) -> dict[str, Any]:
    """A validation's metrics as a record (``map50``...), without Ultralytics' ``fitness`` (final_eval pops
    it from its own; ``YOLO.val``'s ``results_dict`` still holds it).

    Example:
        >>> eval_record({"metrics/mAP50(B)": 0.5, "metrics/mAP50-95(B)": 0.25, "fitness": 0.275})
        {'map50': 0.5, 'map50_95': 0.25}
    """
    return normalize_row({k: _num(v) for k, v in metrics.items() if k != "fitness"})


def _val_batch(trainer: Any) -> int | None:
    """The batch of the loader Ultralytics' validator uses (twice the train batch for detection)."""
    loader = getattr(getattr(trainer, "validator", None), "dataloader", None) or getattr(
        trainer, "test_loader", None
    )
    batch = getattr(loader, "batch_size", None)
    return int(batch) if isinstance(batch, int) and batch > 0 else None


# train arguments that shape a validation (the others only training); the run folder is given on its own
FINAL_VAL_KEYS = (
    "data",
    "imgsz",
    "device",
    "workers",
    "split",
    "conf",
    "iou",
    "max_det",
    "classes",
    "single_cls",
    "agnostic_nms",
    "quantize",
    "plots",
)


def final_val_args(train_args: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``YOLO.val`` that validate as a run with ``train_args`` validates its ``best.pt``.

    Example:
        >>> final_val_args({"data": "d.yaml", "imgsz": 640, "epochs": 100, "lr0": 0.01, "batch": 16})
        {'data': 'd.yaml', 'imgsz': 640}
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {
        key: train_args[key]
        for key in FINAL_VAL_KEYS
        if key in train_args and key in DEFAULT_CFG_DICT and train_args[key] is not None
    }


def release_memory() -> None:
    """Free what unreachable objects (a failed trainer's model, optimizer, loaders) hold, CUDA cache too."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _log_verdict(verdict: Verdict) -> None:
    level = logging.INFO if verdict.decision == "continue" else logging.WARNING
    log.log(level, "[%s] epoch %d: %s - %s", verdict.hook, verdict.epoch, verdict.decision, verdict.reason)


def keep_resumable(last: Path) -> Path | None:
    """Copy ``last.pt`` (with its optimizer) to ``resume.pt`` atomically, before Ultralytics strips it."""
    if not last.is_file():
        return None
    target = last.with_name(RESUME_NAME)
    tmp = target.with_name(f".{RESUME_NAME}.partial")
    shutil.copyfile(last, tmp)
    tmp.replace(target)
    return target


def strip_finished(last: Path | None, best: Path) -> None:
    """Strip the optimizer from ``last`` and ``best`` as Ultralytics' ``final_eval`` does when a run ends
    (``best`` gets ``last``'s ``train_results``); a missing or unreadable file is left as it is."""
    from ultralytics.utils.torch_utils import strip_optimizer

    ckpt = strip_optimizer(last) if last is not None and last.is_file() else {}
    if best.is_file():
        strip_optimizer(best, updates={"train_results": ckpt.get("train_results")})


# -- offline guard --


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
