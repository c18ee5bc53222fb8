"""Latency of the predict call at the operating settings, on a warm model.

Only ``predictor.predict`` is timed (decoding the file is not: a checkpoint's scanner hands over pixels).
A few warm-up calls come first so lazy initialisation and caches do not count.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xraydet.inference.base import Predictor, load_rgb


def measure_latency(
    predictor: Predictor,
    images: Sequence[Path],
    conf: float = 0.25,
    iou: float = 0.7,
    warmup: int = 2,
) -> dict[str, Any]:
    """Time ``predictor.predict`` once per image; p50/p95/mean in ms and images per second.

    Example:
        >>> stats = measure_latency(predictor, images[:20])  # doctest: +SKIP
        >>> sorted(stats)[:3]  # doctest: +SKIP
        ['backend', 'conf', 'device']
    """
    pixels = [load_rgb(p) for p in images]
    for image in pixels[: max(0, warmup)]:
        predictor.predict(image, conf=conf, iou=iou)
    times = []
    for image in pixels:
        start = time.perf_counter()
        predictor.predict(image, conf=conf, iou=iou)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
        "mean_ms": float(ms.mean()) if len(ms) else None,
        "images_per_s": float(len(ms) / ms.sum() * 1000.0) if len(ms) and ms.sum() > 0 else None,
        "n_images": len(ms),
        "backend": getattr(predictor, "backend", type(predictor).__name__),
        "device": str(getattr(predictor, "device", "cpu")),
        "imgsz": getattr(predictor, "imgsz", None),
        "conf": conf,
    }
