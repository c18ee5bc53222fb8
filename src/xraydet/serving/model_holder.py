"""Holds the predictor being served and swaps it without failing a request.

A request reads :attr:`ModelHolder.current` once and uses that :class:`LoadedModel` to the end, so a swap (one
reference assignment, atomic in CPython) never changes the model under a running request: the new model is
loaded completely first, then published; the old one is freed when its last request finishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from xraydet.inference.base import Predictor, UnusableSetting
from xraydet.io import sha256_file
from xraydet.serving.model_source import ModelRef, ModelSource
from xraydet.serving.settings import ServeSettings
from xraydet.serving.threats import resolve_threats
from xraydet.structures import Detections

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A ready predictor with what the API reports about it."""

    ref: ModelRef
    predictor: Predictor
    threats: list[str]
    threats_source: str
    sha256: str | None = None  # of the weights file the source named (before any ONNX export)
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # Ultralytics' predictor keeps per-call state; ONNX Runtime sessions are safe to share between threads.
    # A TTAPredictor reports its base's backend, so a wrapped Ultralytics model is locked too.
    _lock: threading.Lock | None = None

    def __post_init__(self) -> None:
        if self.predictor.backend != "onnx":
            self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return self.predictor.names

    @property
    def threat_ids(self) -> set[int]:
        return {i for i, n in enumerate(self.names) if n in set(self.threats)}

    def predict(self, image: np.ndarray, conf: float, iou: float) -> Detections:
        if self._lock is None:
            return self.predictor.predict(image, conf, iou)
        with self._lock:
            return self.predictor.predict(image, conf, iou)


def load_model(ref: ModelRef, settings: ServeSettings) -> LoadedModel:
    """Load ``ref`` with the configured backend (a ``.pt`` served by ONNX is exported once to a cache)."""
    from xraydet.inference import load_predictor

    backend = settings.backend
    if backend == "auto":  # Ultralytics only for a .pt on a GPU: its .onnx loader drops to the CPU unsaid
        onnx = settings.device == "cpu" or Path(ref.weights).suffix == ".onnx"
        backend = "onnx" if onnx else "ultralytics"
    predictor = load_predictor(
        ref.weights,
        backend=backend,
        device=settings.device,
        imgsz=settings.imgsz,
        threads=settings.threads,
        tta=settings.tta,
    )
    threats, source = resolve_threats(
        Path(ref.weights), predictor.names, getattr(predictor, "metadata", None), settings.threats
    )
    tta = predictor.tta
    log.info(
        "loaded model %s version %s (%s%s, %d classes, threats from %s)",
        ref.name,
        ref.version,
        predictor.backend,
        f", test-time augmentation {tta}" if tta != "off" else "",
        len(predictor.names),
        source,
    )
    return LoadedModel(
        ref=ref, predictor=predictor, threats=threats, threats_source=source, sha256=sha256_file(ref.weights)
    )


class ModelHolder:
    """The current :class:`LoadedModel`, refreshed from a :class:`ModelSource`.

    Args:
        source: says which model to serve.
        settings: backend options.
        loader: builds a :class:`LoadedModel` from a :class:`ModelRef` (tests and other backends may swap it).
    """

    def __init__(
        self,
        source: ModelSource,
        settings: ServeSettings,
        loader: Callable[[ModelRef, ServeSettings], LoadedModel] = load_model,
    ) -> None:
        self.source = source
        self.settings = settings
        self.loader = loader
        self._current: LoadedModel | None = None
        self._refresh_lock = threading.Lock()  # one load at a time; requests never take it
        self._started = False
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def start(self) -> None:
        """The first load (later calls do nothing): :meth:`refresh`, but a wrong setting raises.

        Any other failure is kept in ``last_error`` as by :meth:`refresh` (the server starts unhealthy and
        retries at each check), and a model swapped in later that the settings do not fit is refused there,
        the old one kept.

        Raises:
            UnusableSetting: ``settings.device`` cannot be used on this machine, ``settings.imgsz`` is not the
                first model's fixed input size, or ``settings.threats`` names classes it lacks (most likely a
                typo; :class:`~xraydet.serving.threats.UnknownThreatsSetting`): retrying would never load it.
        """
        if not self._started:
            self._started = True
            self._refresh(strict=True)

    def refresh(self) -> bool:
        """Ask the source for the model to serve and swap if its version changed.

        Returns:
            True if a new model is now served. On any error the old model stays and ``last_error`` says why.
        """
        return self._refresh(strict=False)

    def _refresh(self, strict: bool) -> bool:
        with self._refresh_lock:
            try:
                ref = self.source.current()
                cur = self._current
                if cur is not None and (cur.ref.name, cur.ref.version) == (ref.name, ref.version):
                    self.last_error = None
                    return False
                new = self.loader(ref, self.settings)
            except Exception as err:  # a bad new model must never take down the one being served
                if strict and isinstance(err, UnusableSetting):
                    raise
                self.last_error = f"{type(err).__name__}: {err}"
                log.error(
                    "model refresh failed, still serving %s: %s",
                    self._current.ref.version if self._current else "nothing",
                    self.last_error,
                )
                return False
            self._current = new  # the swap: one reference assignment
            self.last_error = None
            if cur is not None:
                log.info("swapped model %s -> %s", cur.ref.version, ref.version)
            return True
