"""Adapter from Ultralytics ``Results`` to :class:`Detections`; the only place that reads them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xraydet.inference.base import Predictor, UnusableSetting
from xraydet.inference.onnx_backend import fixed_input_size
from xraydet.structures import Detections

os.environ.setdefault("YOLO_OFFLINE", "true")


def detections_from_results(result: Any) -> Detections:
    """Convert one ``ultralytics.engine.results.Results`` to :class:`Detections`."""
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return Detections.empty(with_confidence=True)
    return Detections(
        xyxy=boxes.xyxy.cpu().numpy(),
        class_id=boxes.cls.cpu().numpy().astype(np.int64),
        confidence=boxes.conf.cpu().numpy(),
    )


def check_device(device: str, setting: str = "--device") -> None:
    """Refuse a device Ultralytics cannot use (``cuda:3`` on a one-GPU or CPU-only machine, ``mps`` off a
    Mac) before any work, with an :class:`UnusableSetting` naming ``setting`` (``--device``, or a job file's
    key) instead of Ultralytics' ``ValueError`` at the first image or its quiet fallback to the CPU.
    """
    text = str(device).strip().lower()
    if text == "cpu":  # always there (select_device would reset the threads)
        return
    if text in {"mps", "mps:0"}:
        import torch

        if not torch.backends.mps.is_available():
            raise UnusableSetting(f"{setting} {device}: Apple's MPS is not available here; use cpu or a GPU")
        return
    import logging

    from ultralytics.utils.torch_utils import select_device

    ultralytics_log = logging.getLogger("ultralytics")
    level = ultralytics_log.level
    ultralytics_log.setLevel(logging.ERROR)  # it logs its banner before raising
    try:
        select_device(device, verbose=False)
    except ValueError as err:
        import torch

        first = str(err).strip().split(".")[0]
        raise UnusableSetting(
            f"{setting} {device}: not usable here: {first} (CUDA devices seen: {torch.cuda.device_count()})"
        ) from err
    finally:
        ultralytics_log.setLevel(level)


class UltralyticsPredictor(Predictor):
    """PyTorch inference through Ultralytics (``.pt`` weights; ``.onnx`` too, through its AutoBackend)."""

    backend = "ultralytics"

    def __init__(
        self, weights: str | Path, device: str = "cpu", imgsz: int | None = None, threads: int | None = None
    ):
        import torch
        from ultralytics import YOLO

        check_device(device)
        if threads:
            torch.set_num_threads(threads)
        self.source = Path(weights)
        try:
            self.model = YOLO(str(weights), task="detect")
            names = self.model.names  # some files (an image given as a model) fail only here
        except Exception as err:  # a truncated, corrupt or foreign file: Ultralytics raises TypeError, ...
            from xraydet.inference.export import unreadable_checkpoint

            raise unreadable_checkpoint(weights, err) from err
        self.device = device
        args = getattr(self.model, "overrides", {}) or {}
        train_args = getattr(getattr(self.model, "model", None), "args", {}) or {}
        self.imgsz = int(
            (fixed_input_size(self.source, imgsz) if self.source.suffix == ".onnx" else None)
            or imgsz
            or args.get("imgsz")
            or (train_args.get("imgsz") if isinstance(train_args, dict) else None)
            or 640
        )
        self.names = [names[i] for i in range(len(names))] if isinstance(names, dict) else list(names)

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        return self.predict_batch([image], conf, iou)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], conf: float = 0.25, iou: float = 0.7
    ) -> list[Detections]:
        # Ultralytics reads numpy arrays as BGR (OpenCV order); ours are RGB.
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
        results = self.model.predict(
            bgr, conf=conf, iou=iou, imgsz=self.imgsz, device=self.device, verbose=False, max_det=300
        )
        return [detections_from_results(r) for r in results]
