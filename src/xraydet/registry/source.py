"""The serving side of the registry: a model source that follows an alias (the champion by default).

The server polls :meth:`RegistryModelSource.current` and hot-swaps its predictor when the version changes,
so a promotion or a rollback reaches a running server without a restart.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from xraydet.registry.refs import ModelSpec, fetch_version, resolve_version
from xraydet.registry.store import CHAMPION, TAG_ONNX, client, validate_name

log = logging.getLogger(__name__)


class RegistryModelSource:
    """A ``xraydet.serving.model_source.ModelSource`` that serves whatever ``name@alias`` points to.

    Each call to :meth:`current` asks the registry which version the alias names; weights are downloaded
    once per version into the local cache. If the registry cannot be reached (a busy SQLite file, a tracking
    server restarting) after a version has been served, the last known version is returned and a warning
    logged, so a hiccup in the registry never takes the model away from a running server.

    Example:
        >>> source = RegistryModelSource("xray")  # doctest: +SKIP
        >>> source.current()  # doctest: +SKIP
        ModelRef(name='xray', version='2', weights=PosixPath('runs/model-cache/xray/2/best.pt'))
    """

    def __init__(self, name: str, alias: str = CHAMPION, prefer_onnx: bool = False):
        self.name = validate_name(name)
        self.alias = alias
        self.prefer_onnx = prefer_onnx
        self._last: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistryModelSource({self.name!r}, alias={self.alias!r})"

    def describe(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    def current(self) -> Any:
        """The ``ModelRef(name, version, weights)`` the alias points to now."""
        from xraydet.serving.model_source import ModelRef

        with self._lock:
            try:
                mv = resolve_version(ModelSpec(self.name, alias=self.alias), client())
                if self._last is not None and self._last.version == str(mv.version):
                    return self._last
                weights = fetch_version(mv)
                onnx_name = (mv.tags or {}).get(TAG_ONNX)
                if self.prefer_onnx and onnx_name and (weights.parent / onnx_name).is_file():
                    weights = weights.parent / onnx_name
                ref = ModelRef(name=self.name, version=str(mv.version), weights=weights)
            except Exception as err:
                if self._last is None:
                    raise
                log.warning("registry lookup of %s failed (%s); keeping v%s", self.describe(), err,
                            self._last.version)
                return self._last
            self._last = ref
            return ref
