"""Which epochs Ultralytics validates and checkpoints when a run validates every N epochs (``val_every``).

Ultralytics validates an epoch when ``trainer.args.val`` is set at its end, and always at the last one. It
writes ``last.pt`` (and ``best.pt`` when the fitness improved) when ``trainer.args.save`` is set, and at the
last epoch. These
helpers take only the Ultralytics trainer and the standard library, so the GPU benchmark script
(benchmarks/gpu_recipe.py, on a machine without xraydet's dependencies) loads this very file.
"""

from __future__ import annotations

import math
import time
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


def time_budget_ends(trainer: Any, margin: float = 0.25) -> bool:
    """Whether Ultralytics' ``time`` budget (hours) will end the run after the epoch just trained.

    Mirrors Ultralytics' own end-of-epoch rule: it re-plans ``epochs = ceil(budget / mean epoch time)`` and
    stops once the (absolute, 0-based) epoch reaches it, or once the budget is spent. ``margin`` (in mean
    epochs) also counts an epoch that ends within a quarter epoch of the budget: the next one would be cut.
    """
    hours = getattr(trainer.args, "time", None)
    if not hours:
        return False
    budget = float(hours) * 3600
    elapsed = time.time() - trainer.train_time_start
    mean = elapsed / max(trainer.epoch - trainer.start_epoch + 1, 1)
    planned = math.ceil(budget / mean) if mean > 0 else trainer.epoch + 1
    return elapsed + margin * mean >= budget or trainer.epoch + 1 >= planned


def ultralytics_validates(trainer: Any) -> bool:
    """Whether Ultralytics will validate the epoch just trained (read at ``on_train_epoch_end``, after
    ``trainer.args.val`` was set): its own rule, which also validates the last epoch, a run stopping (its
    ``time`` budget cut the epoch) and an epoch where its early stopping may fire."""
    final = trainer.epoch + 1 >= trainer.epochs
    stopper = getattr(trainer, "stopper", None)
    return bool(trainer.args.val or final or trainer.stop or getattr(stopper, "possible_stop", False))


def set_checkpoint(trainer: Any, needed: bool = False) -> None:
    """Write checkpoints only for epochs that are validated or ``needed`` (call after setting ``args.val``).

    An unvalidated epoch cannot change ``best.pt``, and its ``last.pt`` would be replaced at the next
    validation, while writing one is not cheap: yolov8m's checkpoint (148 MB with the optimizer state) takes
    0.4-1.1 s to serialise and write on a 2-core machine, against a 2.2 s epoch on an H100. A run killed in
    between resumes from the last validated epoch.
    """
    trainer.args.save = ultralytics_validates(trainer) or needed
