"""What every inference backend offers: images in, :class:`~xraydet.structures.Detections` out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xraydet.errors import ConfigError, XrayDetError
from xraydet.structures import Detections
from xraydet.ultralytics_env import pil_open

if TYPE_CHECKING:
    from PIL import Image


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


class UnusableSetting(ConfigError):
    """A setting (``--device``, ``--imgsz``, a server's ``--threats``) this machine or model cannot honour: a
    wrong setting, not a bad model. A server refuses to start on one rather than answer 503 until it fits."""


class NonFinitePixels(ValueError):
    """A float scan with NaN or infinite pixels: there is no image to stretch to 8 bit."""


def to_rgb(im: Image.Image) -> np.ndarray:
    """A PIL image as an ``HxWx3`` RGB ``uint8`` array, the one conversion every input path uses.

    16-bit and float scans are stretched from their minimum to their maximum (PIL's own conversion clips
    them at 255: a 16-bit scan would turn white); one with NaN or infinite pixels raises
    :class:`NonFinitePixels`.

    Example:
        >>> from PIL import Image
        >>> scan = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
        >>> to_rgb(scan)[..., 0].tolist()
        [[0, 63], [127, 255]]
    """
    if im.mode in {"I", "I;16", "I;16B", "I;16L", "F"}:
        arr = np.asarray(im, dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise NonFinitePixels(f"{bad} of its pixels are not finite numbers (NaN or infinity)")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        return np.repeat(arr.astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB ``uint8`` array, converted by :func:`to_rgb` as the API converts uploads.

    A missing file raises ``FileNotFoundError``; one PIL cannot read (not an image, truncated, corrupt) or
    with non-finite pixels an :class:`~xraydet.errors.XrayDetError` naming it, since PIL's own errors often
    do not.
    """
    try:
        with pil_open(path) as im:
            return to_rgb(im)
    except (FileNotFoundError, MemoryError):
        raise
    except NonFinitePixels as err:
        raise XrayDetError(f"{path}: not a usable scan: {err}") from err
    except Exception as err:  # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error ...
        raise XrayDetError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
