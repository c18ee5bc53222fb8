"""Inference backends behind one interface, :class:`Predictor`, and :func:`load_predictor` to pick one."""

from __future__ import annotations

from pathlib import Path

from xraydet.inference.base import Predictor, load_rgb

BACKENDS = ("auto", "onnx", "ultralytics")


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
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not weights.is_file():
        raise FileNotFoundError(f"model file not found: {weights}")
    if backend == "onnx" or (backend == "auto" and weights.suffix == ".onnx"):
        from xraydet.inference.onnx_backend import OnnxPredictor

        return OnnxPredictor(weights, imgsz=imgsz, threads=threads)
    from xraydet.inference.ultralytics_backend import UltralyticsPredictor

    return UltralyticsPredictor(weights, device=device, imgsz=imgsz, threads=threads)


__all__ = ["BACKENDS", "Predictor", "load_predictor", "load_rgb"]
