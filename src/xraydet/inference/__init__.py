"""Inference backends behind one interface, :class:`Predictor`, and :func:`load_predictor` to pick one
(optionally with test-time augmentation, :mod:`xraydet.inference.tta`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, get_args

from xraydet.errors import ConfigError
from xraydet.inference.base import Predictor, UnusableSetting, load_rgb
from xraydet.inference.tta import TTA, TTA_MODES, check_tta, with_tta

Backend = Literal["auto", "onnx", "ultralytics"]
BACKENDS: tuple[str, ...] = get_args(Backend)

log = logging.getLogger(__name__)


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a :class:`ConfigError` naming ``--backend``.

    Example:
        >>> check_backend("onnx")
        'onnx'
        >>> check_backend("tensorrt")
        Traceback (most recent call last):
        ...
        xraydet.errors.ConfigError: --backend tensorrt: unknown backend; choose one of auto, onnx, ultralytics
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend}: unknown backend; choose one of {', '.join(BACKENDS)}")
    return backend


def load_predictor(
    weights: str | Path,
    backend: str = "auto",
    device: str = "cpu",
    imgsz: int | None = None,
    threads: int | None = None,
    tta: str = "off",
) -> Predictor:
    """Load ``weights`` with the chosen backend.

    ``auto`` picks ONNX Runtime for ``.onnx`` files and Ultralytics/PyTorch for ``.pt``; a ``.pt`` given to
    ``onnx`` is exported once (at ``imgsz``, default its training size) to a cache and reused from there.
    ``tta`` other than ``off`` wraps the backend in a :class:`~xraydet.inference.tta.TTAPredictor`.

    Raises:
        UnusableSetting: a ``device`` the backend cannot use here, or an ``imgsz`` a fixed-size ONNX model
            cannot run at.
    """
    weights = Path(weights)
    check_backend(backend)
    check_tta(tta)
    if not weights.is_file():
        raise FileNotFoundError(f"model file not found: {weights}")
    _warn_if_flips_unseen(weights, tta)  # before the swap below: an ONNX export does not say how it trained
    if backend == "onnx" or (backend == "auto" and weights.suffix == ".onnx"):
        from xraydet.inference.onnx_backend import OnnxPredictor, execution_providers

        if weights.suffix == ".pt":
            from xraydet.inference.export import cached_onnx

            execution_providers(device)  # a wrong --device is refused before the export, not after it
            weights = cached_onnx(weights, imgsz)
        return with_tta(OnnxPredictor(weights, imgsz=imgsz, threads=threads, device=device), tta)
    from xraydet.inference.ultralytics_backend import UltralyticsPredictor

    return with_tta(UltralyticsPredictor(weights, device=device, imgsz=imgsz, threads=threads), tta)


def _warn_if_flips_unseen(weights: Path, tta: str) -> None:
    """Warn when ``--tta flips`` is asked of a ``.pt`` trained without vertical flips (``flipud`` 0)."""
    if tta != "flips" or weights.suffix != ".pt":
        return
    from xraydet.errors import XrayDetError
    from xraydet.inference.export import checkpoint_info

    try:
        flipud = checkpoint_info(weights)["flipud"]
    except XrayDetError:  # unreadable: loading it says so
        return
    if flipud == 0:
        log.warning(
            "%s was trained without vertical flips (flipud 0): --tta flips shows it upside-down scans it "
            "never saw; --tta hflip keeps to what it learnt",
            weights,
        )


__all__ = [
    "BACKENDS",
    "TTA",
    "TTA_MODES",
    "Backend",
    "Predictor",
    "UnusableSetting",
    "check_backend",
    "check_tta",
    "load_predictor",
    "load_rgb",
    "with_tta",
]
