"""Which epochs Ultralytics validates when a run validates only every N epochs (``val_every``).

Ultralytics validates an epoch when ``trainer.args.val`` is set at its end, and always at the last one. These
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
