"""Inference backends behind one interface, :class:`Predictor`, and :func:`load_predictor` to pick one."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from xraydet.errors import ConfigError
from xraydet.inference.base import Predictor, load_rgb

Backend = Literal["auto", "onnx", "ultralytics"]
BACKENDS: tuple[str, ...] = get_args(Backend)


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
) -> Predictor:
    """Load ``weights`` with the chosen backend.

    ``auto`` picks ONNX Runtime for ``.onnx`` files and Ultralytics/PyTorch for ``.pt``.
    """
    weights = Path(weights)
    check_backend(backend)
    if not weights.is_file():
        raise FileNotFoundError(f"model file not found: {weights}")
    if backend == "onnx" or (backend == "auto" and weights.suffix == ".onnx"):
        from xraydet.inference.onnx_backend import OnnxPredictor

        return OnnxPredictor(weights, imgsz=imgsz, threads=threads)
    from xraydet.inference.ultralytics_backend import UltralyticsPredictor

    return UltralyticsPredictor(weights, device=device, imgsz=imgsz, threads=threads)


__all__ = ["BACKENDS", "Backend", "Predictor", "check_backend", "load_predictor", "load_rgb"]
