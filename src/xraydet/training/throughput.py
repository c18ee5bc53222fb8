"""How fast the training loop runs, and whether it waits for its data loader.

Measured per epoch from Ultralytics' batch callbacks: ``train_images_per_s`` over the training loop alone
(no validation, no checkpoint), and ``loader_wait_frac``, the share of the loop spent between one batch's end
and the next batch's arrival. A wait near 0 means the GPU side (or the main process) is the limit and larger
batches pay; a large wait means more loader workers or a RAM cache will (docs/benchmarks/gpu.md).

Example:
    >>> clock = LoopClock()
    >>> clock.epoch_start(); clock.batch_start(); clock.batch_end()
    >>> clock.epoch_end(batch_size=16, n_images=10)
    >>> clock.batches, clock.images, sorted(clock.figures())
    (1, 10, ['loader_wait_frac', 'train_images_per_s'])
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

FIGURES = ("train_images_per_s", "loader_wait_frac")


@dataclass
class LoopClock:
    """Times one epoch's training loop (call the four methods from the matching callbacks).

    After ``epoch_end``: ``loop_s`` (first batch request to epoch end), ``wait_s`` (of which waiting for the
    loader), ``batches`` and ``images`` (the last batch may be partial, so at most ``n_images``).
    """

    loop_s: float = 0.0
    wait_s: float = 0.0
    batches: int = 0
    images: int = 0
    _start: float = 0.0
    _last: float = 0.0

    def epoch_start(self) -> None:
        self._start = self._last = time.perf_counter()
        self.loop_s, self.wait_s, self.batches, self.images = 0.0, 0.0, 0, 0

    def batch_start(self) -> None:
        self.wait_s += time.perf_counter() - self._last
        self.batches += 1

    def batch_end(self) -> None:
        self._last = time.perf_counter()

    def epoch_end(self, batch_size: int, n_images: int) -> None:
        self.loop_s = time.perf_counter() - self._start
        self.images = min(self.batches * batch_size, n_images)

    def figures(self) -> dict[str, float]:
        """This epoch's figures (empty before an epoch has ended)."""
        if self.loop_s <= 0:
            return {}
        return {
            "train_images_per_s": self.images / self.loop_s,
            "loader_wait_frac": min(self.wait_s / self.loop_s, 1.0),
        }


def run_figures(epochs: dict[int, dict[str, Any]]) -> dict[str, float]:
    """A run's loop speed and loader wait: the median of each figure over its epochs.

    ``epochs`` maps an epoch to its figures, with ``start_up: True`` on the first epoch of each training
    process (its workers start then, so it is left out unless it is all there is).

    Example:
        >>> run_figures({1: {"train_images_per_s": 40.0, "loader_wait_frac": 0.5, "start_up": True},
        ...              2: {"train_images_per_s": 100.0, "loader_wait_frac": 0.1},
        ...              3: {"train_images_per_s": 120.0, "loader_wait_frac": 0.2}})
        {'train_images_per_s': 110.0, 'loader_wait_frac': 0.15000000000000002}
    """
    rows = [f for _, f in sorted(epochs.items())]
    steady = [f for f in rows if not f.get("start_up")] or rows
    out = {}
    for key in FIGURES:
        values = [float(f[key]) for f in steady if key in f]
        if values:
            out[key] = statistics.median(values)
    return out
