"""Hyper-parameter presets as data: one YAML file per preset in ``training/presets/``.

A preset sets Ultralytics train arguments only (``args:``) plus a one-line ``description``. Adding a preset is
adding a file: ``presets/xray-fast.yaml`` becomes the preset ``xray-fast``. A job may also name a YAML file of
its own (``preset: ./my_preset.yaml``) with the same layout.

Example:
    >>> sorted(list_presets())[:2]
    ['baseline', 'improved']
    >>> load_preset("improved").args["lr0"]
    0.002
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xraydet.config import read_yaml_mapping
from xraydet.errors import ConfigError

PRESET_DIR = Path(__file__).with_name("presets")


@dataclass(frozen=True)
class Preset:
    """A named set of Ultralytics train arguments."""

    name: str
    description: str
    args: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None


def list_presets() -> dict[str, Path]:
    """The built-in presets: name -> YAML file."""
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def load_preset(name_or_path: str | Path, base_dir: Path | None = None) -> Preset:
    """Load a built-in preset by name, or a preset YAML file by path (relative to ``base_dir``).

    Raises:
        ConfigError: unknown name (the message lists the valid ones), unreadable file, or an ``args``
            key that is not an Ultralytics train argument.
    """
    known = list_presets()
    text = str(name_or_path)
    if text in known:
        path = known[text]
    else:
        path = Path(text).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        if not (text.endswith((".yaml", ".yml")) and path.is_file()):
            close = difflib.get_close_matches(text, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown preset '{text}'{hint}; valid presets: {', '.join(known)}, or a path to a .yaml"
            )
    return _read_preset(path)


def _read_preset(path: Path) -> Preset:
    from xraydet.training.job import check_ultralytics_keys, check_ultralytics_values

    raw = read_yaml_mapping(path, "preset", example="args: {lr0: 0.01}")
    if not isinstance(raw.get("args", {}), dict):
        raise ConfigError(f"{path}: expected a mapping with 'description' and an 'args' mapping")
    extra = set(raw) - {"description", "args"}
    if extra:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(extra)}; a preset has only 'description' and 'args'"
        )
    args = dict(raw.get("args") or {})
    check_ultralytics_keys(args, where=f"{path}: args")
    args = check_ultralytics_values(args, where=f"{path}: args")
    return Preset(name=path.stem, description=str(raw.get("description", "")), args=args, source=path)
