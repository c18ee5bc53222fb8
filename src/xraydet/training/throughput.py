"""How fast the training loop runs, and whether it waits for its data loader.

Measured per epoch from Ultralytics' batch callbacks: ``train_images_per_s`` over the training loop alone
(no validation, no checkpoint), and ``loader_wait_frac``, the share of the loop spent between one batch's end
and the next batch's arrival. A wait near 0 means the GPU side (or the main process) is the limit and larger
batches pay; a large wait means more loader workers or a RAM cache will (docs/benchmarks/gpu.md).

Example:
    >>> clock = LoopClock()
    >>> clock.epoch_start(); clock.batch_start(); clock.batch_end(); clock.epoch_end(images=16)
    >>> sorted(clock.figures())
    ['loader_wait_frac', 'train_images_per_s']
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class LoopClock:
    """Times one epoch's training loop (call the four methods from the matching callbacks)."""

    _start: float = 0.0
    _last: float = 0.0
    _wait_s: float = 0.0
    _loop_s: float = 0.0
    _images: int = 0

    def epoch_start(self) -> None:
        self._start = self._last = time.perf_counter()
        self._wait_s, self._loop_s, self._images = 0.0, 0.0, 0

    def batch_start(self) -> None:
        self._wait_s += time.perf_counter() - self._last

    def batch_end(self) -> None:
        self._last = time.perf_counter()

    def epoch_end(self, images: int) -> None:
        self._loop_s, self._images = time.perf_counter() - self._start, images

    def figures(self) -> dict[str, float]:
        """This epoch's figures (empty before an epoch has ended)."""
        if self._loop_s <= 0:
            return {}
        return {
            "train_images_per_s": self._images / self._loop_s,
            "loader_wait_frac": min(self._wait_s / self._loop_s, 1.0),
        }
