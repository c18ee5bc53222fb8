"""Which of a model's classes are threats.

The answer is looked up in this order and the source is reported by ``GET /v1/models``:

1. the server's ``threats`` setting (``--threats knife,gun``);
2. a sidecar file ``<weights>.threats.json`` holding a JSON list of class names;
3. ``xraydet_threats`` in the ONNX metadata (written by :func:`xraydet.inference.export.export_onnx`);
4. the ``threats`` entry of the data.yaml recorded in a ``.pt`` checkpoint's ``train_args``, if it still
   exists;
5. otherwise every class counts as a threat (a screening default: nothing is silently ignored).

Names match the model's classes regardless of case, as a data set's ``threats`` match its ``names``; the
model's own spelling is what is served and reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xraydet.config import read_utf8_text
from xraydet.errors import ConfigError
from xraydet.inference.base import UnusableSetting
from xraydet.inference.export import THREATS_KEY


class UnknownThreatsSetting(UnusableSetting):
    """The ``threats`` setting names classes the model does not have: a wrong setting, not a bad model."""


def sidecar_path(weights: Path) -> Path:
    return weights.with_name(weights.name + ".threats.json")


def _model_name(threat: str, names: list[str]) -> str | None:
    """The model's spelling of ``threat``: itself, else its one case-insensitive match (None if none).

    Data sets match threats to names regardless of case (``threats: [knife]`` for a class ``Knife``), so a
    threat list carried from one (the ONNX metadata, the training data.yaml) must be read the same way here.
    """
    if threat in names:
        return threat
    matches = [n for n in names if n.lower() == threat.lower()]
    return matches[0] if len(matches) == 1 else None


def _check(threats: Any, names: list[str], where: str, error: type[ConfigError] = ConfigError) -> list[str]:
    if not isinstance(threats, list) or not all(isinstance(t, str) for t in threats):
        raise error(f"{where}: threats must be a list of class names, got {threats!r}")
    found = {t: _model_name(t, names) for t in threats}
    unknown = [t for t, n in found.items() if n is None]
    if unknown:
        raise error(f"{where}: unknown threat classes {unknown}; the model's classes are {names}")
    return list(dict.fromkeys(n for n in found.values() if n is not None))


def resolve_threats(
    weights: Path, names: list[str], metadata: dict[str, Any] | None = None, override: list[str] | None = None
) -> tuple[list[str], str]:
    """The threat class names of a model and where they came from (see the module docstring).

    Raises:
        UnknownThreatsSetting: ``override`` names a class that is not in ``names``.
        ConfigError: the sidecar, metadata or training data.yaml does.
    """
    if override is not None:
        return _check(override, names, "--threats setting", UnknownThreatsSetting), "settings"
    sidecar = sidecar_path(weights)
    if sidecar.is_file():
        try:
            data = json.loads(read_utf8_text(sidecar))
        except ValueError as err:
            raise ConfigError(f"{sidecar}: not valid JSON ({err})") from err
        return _check(data, names, str(sidecar)), f"sidecar {sidecar.name}"
    if metadata and metadata.get(THREATS_KEY) is not None:
        return _check(metadata[THREATS_KEY], names, f"{weights} metadata"), "onnx metadata"
    if weights.suffix == ".pt":
        from xraydet.inference.export import checkpoint_info

        found = checkpoint_info(weights)["threats"]
        if found is not None:
            return _check(found, names, f"{weights} training data.yaml"), "training data.yaml"
    return list(names), "default: all classes (nothing known about threats)"
