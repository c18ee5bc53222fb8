"""Which epochs Ultralytics validates (``val_every``) and checkpoints (``save_every``) when a run does not do
both after every epoch.

Ultralytics validates an epoch when ``trainer.args.val`` is set at its end, and always at the last one; it
writes ``last.pt`` (and ``best.pt`` when the fitness improved) when ``trainer.args.save`` is set, and always
at the last one. Its NaN recovery reloads ``last.pt`` and trains the epoch again, which is only right when
``last.pt`` holds the epoch before (:func:`guard_nan_recovery`). These helpers take only the Ultralytics
trainer and the standard library, so the GPU benchmark script (benchmarks/gpu_recipe.py, on a machine without
xraydet's dependencies) loads this very file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any


def skip_validation(trainer: Any) -> None:
    """Mark the epoch just trained as not validated, so nothing downstream mistakes it for a measured one.

    Called at ``on_train_epoch_end`` after setting ``trainer.args.val = False``. Ultralytics would otherwise
    log the previous validation's metrics again and, finding the fitness unchanged, overwrite ``best.pt``
    with these unvalidated weights. If it validates anyway (last epoch, time budget spent), it overwrites all
    three.
    """
    trainer.metrics = dict.fromkeys(trainer.metrics or {}, math.nan)
    trainer.fitness = None
    if trainer.best_fitness is None:  # before the first validation None == None would save best.pt
        trainer.best_fitness = -math.inf


def _time_so_far(trainer: Any) -> tuple[float, float, float] | None:
    """``(budget, elapsed, mean epoch time)`` in seconds under Ultralytics' ``time`` budget (hours), as its
    end-of-epoch re-plan measures them; None without a budget."""
    hours = getattr(trainer.args, "time", None)
    if not hours:
        return None
    elapsed = time.time() - trainer.train_time_start
    return float(hours) * 3600, elapsed, elapsed / max(trainer.epoch - trainer.start_epoch + 1, 1)


def time_budget_ends(trainer: Any, margin: float = 0.25) -> bool:
    """Whether Ultralytics' ``time`` budget (hours) will end the run after the epoch just trained.

    Mirrors Ultralytics' own end-of-epoch rule: it re-plans ``epochs = ceil(budget / mean epoch time)`` and
    stops once the (absolute, 0-based) epoch reaches it, or once the budget is spent. ``margin`` (in mean
    epochs) also counts an epoch that ends within a quarter epoch of the budget: the next one would be cut.
    """
    if (so_far := _time_so_far(trainer)) is None:
        return False
    budget, elapsed, mean = so_far
    planned = math.ceil(budget / mean) if mean > 0 else trainer.epoch + 1
    return elapsed + margin * mean >= budget or trainer.epoch + 1 >= planned


def time_budget_stops(trainer: Any) -> bool:
    """Whether Ultralytics' ``time`` re-plan will end its loop after the epoch just trained, judged now (its
    save step): the rule it applies right after, ``epoch >= ceil(budget / mean epoch time)`` (0-based epoch).

    The mean epoch time only grows by then, and the plan only shrinks: a True here stays True.
    """
    if (so_far := _time_so_far(trainer)) is None:
        return False
    budget, _, mean = so_far
    return mean > 0 and trainer.epoch >= math.ceil(budget / mean)


def save_due(trainer: Any, every: int, validating: bool) -> bool:
    """Whether the epoch just trained must be written to ``last.pt`` when a run saves every ``every`` epochs.

    Writing ``last.pt`` (optimizer and EMA included: 99 MB for yolov8m with SGD) after every epoch costs a
    short GPU run a share of its epochs; a resume then starts from the latest checkpoint and trains the rest
    again. An epoch is still always written when it is validated (only a validated epoch can become
    ``best.pt``, which Ultralytics writes in the same step), when Ultralytics will validate it anyway (its
    early-stopping check, a stop request) and when it is the last planned one. Call at
    ``on_train_epoch_end``, after deciding ``validating``.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> t = NS(epoch=3, epochs=10, stop=False, stopper=NS(possible_stop=False))  # 4 epochs done
        >>> save_due(t, every=4, validating=False), save_due(t, every=3, validating=False)
        (True, False)
        >>> save_due(t, every=3, validating=True)
        True
    """
    done = trainer.epoch + 1
    return (
        every <= 1
        or done % every == 0
        or validating
        or done >= trainer.epochs
        or bool(trainer.stop)
        or bool(getattr(trainer.stopper, "possible_stop", False))
    )


class StaleNanRecovery(RuntimeError):
    """Ultralytics' NaN recovery would go on from a ``last.pt`` older than the epoch before the NaN one.

    ``epoch``: the (1-based) epoch whose loss or fitness was NaN/inf; ``saved``: the epoch this training
    process last wrote to ``last.pt`` (None: none yet, so ``last.pt`` is whatever an earlier process left).
    """

    def __init__(self, epoch: int, saved: int | None) -> None:
        self.epoch, self.saved = epoch, saved
        held = f"holds epoch {saved}" if saved is not None else "was not written by this training"
        super().__init__(
            f"NaN/Inf at epoch {epoch}: Ultralytics would recover by training it again from last.pt, which "
            f"{held}, not epoch {epoch - 1}: the epochs in between would be lost while results.csv keeps them"
        )


def guard_nan_recovery(trainer: Any, saved_epoch: Callable[[], int | None]) -> None:
    """Make Ultralytics' NaN recovery raise :class:`StaleNanRecovery` rather than reload a stale ``last.pt``.

    At the end of an epoch whose loss (or validation fitness) is NaN/inf, Ultralytics (8.4) reloads
    ``last.pt`` -- weights, optimizer, EMA -- and trains the same epoch again. With ``save_every`` N > 1,
    ``last.pt`` may be several epochs old: training would silently go on from its weights under epoch numbers
    that count the epochs after it as trained. ``saved_epoch()`` gives the (1-based) epoch this process last
    wrote to ``last.pt``; where that is the epoch before, the recovery runs as Ultralytics made it. Call once
    the trainer is set up (``on_pretrain_routine_end``). A trainer without the method (another Ultralytics
    version) is left alone.
    """
    recover = getattr(trainer, "_handle_nan_recovery", None)
    if recover is None:
        return

    def guarded(epoch: int) -> Any:  # epoch: 0-based, so also the 1-based number of the epoch before
        if epoch != trainer.start_epoch and saved_epoch() != epoch and _corrupted(trainer):
            raise StaleNanRecovery(epoch + 1, saved_epoch())
        return recover(epoch)

    trainer._handle_nan_recovery = guarded


def _corrupted(trainer: Any) -> bool:
    """Ultralytics' own test for a recovery: the last batch's loss or the validation fitness is not finite."""
    loss, fitness = getattr(trainer, "loss", None), getattr(trainer, "fitness", None)
    return (loss is not None and not bool(loss.isfinite().all())) or (
        fitness is not None and not math.isfinite(float(fitness))
    )
