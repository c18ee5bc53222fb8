"""Model references (``name``, ``name@alias``, ``name/3``, ``models:/name@champion``) and the weights cache.

A resolved version is downloaded once into ``<runs>/model-cache/<name>/<version>/`` (built under a temporary
name and renamed into place, so a half-downloaded folder never appears) and reused while its SHA-256 still
matches the one recorded at registration.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from xraydet.io import sha256_file
from xraydet.registry.store import (
    CHAMPION,
    TAG_ONNX,
    TAG_SHA256,
    TAG_WEIGHTS,
    WEIGHT_SUFFIXES,
    RegistryError,
    client,
    get_model,
    get_version,
)
from xraydet.tracking import runs_root

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

_REF_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+|latest))?$"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed reference: a model name and either an alias or a version (``"latest"`` allowed)."""

    name: str
    alias: str | None = None
    version: str | None = None


def parse_ref(ref: str) -> ModelSpec:
    """Parse a model reference; a bare name means its champion.

    Example:
        >>> parse_ref("models:/xray@champion")
        ModelSpec(name='xray', alias='champion', version=None)
        >>> parse_ref("xray/3").version
        '3'
        >>> parse_ref("xray").alias
        'champion'
    """
    text = ref.strip()
    if text.startswith("models:/"):
        text = text[len("models:/"):]
    match = _REF_RE.match(text)
    if not match:
        raise RegistryError(
            f"bad model reference {ref!r}: use NAME (its champion), NAME@ALIAS, NAME/VERSION "
            "or models:/NAME@ALIAS"
        )
    alias, version = match["alias"], match["version"]
    return ModelSpec(match["name"], alias if alias or version else CHAMPION, version)


def resolve_version(ref: str | ModelSpec, c: MlflowClient | None = None) -> ModelVersion:
    """The MLflow model version a reference points to, with clear errors for unknown names/aliases."""
    spec = parse_ref(ref) if isinstance(ref, str) else ref
    c = c or client()
    model = get_model(spec.name, c)
    if spec.alias is not None:
        aliases = model.aliases or {}
        if spec.alias not in aliases:
            known = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none set"
            hint = "; promote a version first (xraydet registry promote)" if spec.alias == CHAMPION else ""
            raise RegistryError(f"model {spec.name!r} has no alias {spec.alias!r} (aliases: {known}){hint}")
        return get_version(spec.name, aliases[spec.alias], c)
    if spec.version == "latest":
        versions = c.search_model_versions(f"name='{spec.name}'")
        if not versions:
            raise RegistryError(f"model {spec.name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    return get_version(spec.name, str(spec.version), c)


def cache_dir(name: str, version: str) -> Path:
    return runs_root() / "model-cache" / name / str(version)


def _weights_in(folder: Path, mv: ModelVersion) -> Path:
    tags = mv.tags or {}
    if tags.get(TAG_WEIGHTS):
        return folder / tags[TAG_WEIGHTS]
    # Registered outside xraydet: take the single weights file in the folder.
    found = sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    pt = [p for p in found if p.suffix == ".pt"]
    if len(pt) == 1 or len(found) == 1:
        return (pt or found)[0]
    names = [p.name for p in found]
    raise RegistryError(f"cannot tell which weights file of {mv.name}/{mv.version} to use: {names}")


def _intact(folder: Path, mv: ModelVersion) -> Path | None:
    """The cached weights when present and matching the registered SHA-256, else ``None``."""
    if not folder.is_dir():
        return None
    try:
        weights = _weights_in(folder, mv)
    except RegistryError:
        return None
    if not weights.is_file():
        return None
    expected = (mv.tags or {}).get(TAG_SHA256)
    if expected and sha256_file(weights) != expected:
        log.warning("cached %s differs from the registered sha256; downloading again", weights)
        return None
    return weights


def fetch_version(mv: ModelVersion) -> Path:
    """Local path of a model version's weights file, downloading into the cache when needed."""
    from mlflow.artifacts import download_artifacts

    final = cache_dir(mv.name, mv.version)
    cached = _intact(final, mv)
    if cached is not None:
        return cached
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(tmp))
        weights = _weights_in(tmp, mv)
        if not weights.is_file():
            raise RegistryError(f"{mv.name}/{mv.version}: artifact {weights.name} missing from {mv.source}")
        expected = (mv.tags or {}).get(TAG_SHA256)
        if expected and sha256_file(weights) != expected:
            raise RegistryError(
                f"{mv.name}/{mv.version}: downloaded {weights.name} does not match its registered sha256 "
                f"{expected[:12]}...; the artifact store copy is corrupt or was replaced"
            )
        if final.exists():  # corrupt or stale copy: move it aside, then swap ours in
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, trash / "x")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process renamed its copy in first; use it if intact.
            cached = _intact(final, mv)
            if cached is None:
                raise
            return cached
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / weights.relative_to(tmp)


def resolve_model(ref: str, *, onnx: bool = False) -> Path:
    """Local path of the weights a reference points to (``name`` means its champion).

    Args:
        ref: ``name``, ``name@alias``, ``name/3``, ``name/latest`` or ``models:/name@alias``.
        onnx: return the ONNX export registered with the weights instead (error if there is none).

    Example:
        >>> resolve_model("xray@champion")  # doctest: +SKIP
        PosixPath('runs/model-cache/xray/2/best.pt')
    """
    mv = resolve_version(ref)
    weights = fetch_version(mv)
    if not onnx:
        return weights
    name = (mv.tags or {}).get(TAG_ONNX)
    path = weights.with_name(name) if name else weights.with_suffix(".onnx")
    if not path.is_file():
        raise RegistryError(f"{mv.name}/{mv.version} was registered without an ONNX export beside it")
    return path


__all__ = ["ModelSpec", "cache_dir", "fetch_version", "parse_ref", "resolve_model", "resolve_version"]
