"""Where the served model comes from: a file, or the registry's champion (``xraydet.registry``).

A :class:`ModelSource` only answers "which model should be served now?"; the server polls it and hot-swaps
when the answer's ``version`` changes (see :mod:`xraydet.serving.model_holder`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from xraydet.errors import XrayDetError
from xraydet.io import sha256_file


@dataclass(frozen=True)
class ModelRef:
    """One servable model: a display ``name``, a ``version`` that changes with the model, its weights."""

    name: str
    version: str
    weights: Path


@runtime_checkable
class ModelSource(Protocol):
    """Anything that can say which model to serve now."""

    def current(self) -> ModelRef: ...


def file_version(path: Path) -> str:
    """A short content hash: the version of a model file changes exactly when its bytes do."""
    return sha256_file(path)[:12]


class FileModelSource:
    """Serve a weights file; replacing the file (atomically) or calling :meth:`switch` changes the model.

    Hashing is cached per (inode, size, mtime), so polling an unchanged file costs one ``stat``.

    Example:
        >>> src = FileModelSource("best.onnx")  # doctest: +SKIP
        >>> src.current().version  # doctest: +SKIP
        '3f2a9c01b7de'
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self._lock = threading.Lock()
        self._path = Path(path)
        self._name = name
        self._cache: tuple[tuple[int, int, int], str] | None = None

    def switch(self, path: str | Path, name: str | None = None) -> None:
        """Point the source at another file (the server picks it up at its next check)."""
        with self._lock:
            self._path, self._cache = Path(path), None
            if name is not None:
                self._name = name

    def current(self) -> ModelRef:
        with self._lock:
            path = self._path
            try:
                st = path.stat()
            except FileNotFoundError as err:
                raise XrayDetError(f"model file not found: {path}") from err
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, file_version(path))
            return ModelRef(name=self._name or path.stem, version=self._cache[1], weights=path)


def source_for(model: str) -> ModelSource:
    """A file source when ``model`` is an existing file, else the registry's champion of that model name.

    Accepts ``name`` (follows ``@champion``), ``name@alias`` and ``models:/name@alias`` for the registry.
    """
    if Path(model).is_file():
        return FileModelSource(model)
    if Path(model).suffix in {".pt", ".onnx"}:
        raise XrayDetError(f"model file not found: {model}")
    name, _, alias = model.removeprefix("models:/").partition("@")
    try:
        from xraydet.registry import RegistryModelSource
    except ImportError as err:
        raise XrayDetError(
            f"{model!r} is not a file and the model registry is not available ({err})"
        ) from err
    return RegistryModelSource(name, alias=alias) if alias else RegistryModelSource(name)
