"""What every inference backend offers: images in, :class:`~xraydet.structures.Detections` out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xraydet.errors import XrayDetError
from xraydet.structures import Detections
from xraydet.ultralytics_env import pil_open


class Predictor(ABC):
    """A loaded detector. Images are ``HxWx3`` RGB ``uint8`` arrays; boxes come back in their pixels.

    Subclasses set ``names`` (class names by id), ``backend`` (a short word), ``imgsz`` and ``source`` (the
    weights file, or the URL of a served model); ``tta`` says which test-time augmentation the predictions
    use (``off`` unless a :class:`~xraydet.inference.tta.TTAPredictor` wraps the backend).
    """

    names: list[str]
    backend: str
    imgsz: int
    source: Path | str
    tta: str = "off"

    @abstractmethod
    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        """Detect on one image; only boxes scoring at least ``conf`` are returned."""

    def predict_batch(
        self, images: Sequence[np.ndarray], conf: float = 0.25, iou: float = 0.7
    ) -> list[Detections]:
        return [self.predict(im, conf, iou) for im in images]


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB ``uint8`` array (grey and RGBA scans are converted).

    A missing file raises ``FileNotFoundError``; one PIL cannot read (not an image, truncated, corrupt) an
    :class:`~xraydet.errors.XrayDetError` naming it, since PIL's own errors often do not.
    """
    try:
        with pil_open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as err:  # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error ...
        raise XrayDetError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
