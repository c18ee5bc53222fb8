"""The serving side of the registry: a model source that follows an alias (the champion by default).

The server polls :meth:`RegistryModelSource.current` and hot-swaps its predictor when the version changes,
so a promotion or a rollback reaches a running server without a restart.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from xraydet.registry.refs import ModelSpec, fetch_version, resolve_version
from xraydet.registry.store import CHAMPION, TAG_ONNX, RegistryError, client, validate_name

log = logging.getLogger(__name__)


class RegistryModelSource:
    """A ``xraydet.serving.model_source.ModelSource`` that serves whatever ``name@alias`` points to.

    Each call to :meth:`current` asks the registry which version the alias names; weights are downloaded
    once per version into the local cache. If the registry cannot be reached (a busy SQLite file, a tracking
    server restarting) after a version has been served, the last known version is returned and a warning
    logged, so a hiccup in the registry never takes the model away from a running server. Anything else (the
    alias removed, a new version whose weights cannot be downloaded or fail their SHA-256 check) raises: the
    server keeps serving its model and shows the error in ``/v1/models`` ``last_error``.

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
        """The ``ModelRef(name, version, weights)`` the alias points to now.

        Raises:
            RegistryError: the alias or its version does not exist, or the new version's weights cannot be
                downloaded or fail their SHA-256 check. The server keeps its current model and reports the
                error (``last_error``); only an unreachable registry is answered with the last version.
        """
        from xraydet.serving.model_source import ModelRef

        with self._lock:
            try:
                mv = resolve_version(ModelSpec(self.name, alias=self.alias), client())
            except RegistryError:
                raise  # the registry answered: no such model, alias or version
            except Exception as err:
                if self._last is None:
                    raise
                log.warning("registry lookup of %s failed (%s); keeping v%s", self.describe(), err,
                            self._last.version)
                return self._last
            if self._last is not None and self._last.version == str(mv.version):
                return self._last
            # A download or integrity failure of a new version is not a hiccup: it propagates, so the server
            # keeps the old model and shows the error.
            weights = fetch_version(mv)
            onnx_name = (mv.tags or {}).get(TAG_ONNX)
            if self.prefer_onnx and onnx_name and (weights.parent / onnx_name).is_file():
                weights = weights.parent / onnx_name
            ref = ModelRef(name=self.name, version=str(mv.version), weights=weights)
            self._last = ref
            return ref
