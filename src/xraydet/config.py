"""Reading config files at the edge: a bad YAML file becomes an error a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from xraydet.errors import ConfigError
from xraydet.io import TextDecodeError, decode_text


def number_from_text(text: str) -> float | str:
    """A number written as text, as YAML 1.1 reads ``1e-3`` (an exponent without a dot); other text as it is.

    NaN and infinity stay text: no setting means them, and they would make every comparison false.

    Example:
        >>> number_from_text("1e-3"), number_from_text("fast"), number_from_text("nan")
        (0.001, 'fast', 'nan')
    """
    if text.strip().lower().lstrip("+-") in {"nan", "inf", "infinity"}:
        return text
    try:
        return float(text)
    except ValueError:
        return text


def read_utf8_text(path: str | Path) -> str:
    """A config file's text; bytes that are not UTF-8 raise a :class:`ConfigError` naming the file and byte.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "latin1.yaml"
        >>> _ = f.write_bytes(b"name: caf\\xe9")
        >>> read_utf8_text(f)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.errors.ConfigError: .../latin1.yaml: not UTF-8 text (byte 9)
    """
    try:
        return decode_text(Path(path).read_bytes(), path)
    except TextDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.offset})") from err


def read_yaml_mapping(path: str | Path, what: str = "config", example: str = "") -> dict[str, Any]:
    """Load a YAML file that must hold a mapping; errors name the file (and line) and what was expected.

    An empty file reads as ``{}``.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "p.yaml"
        >>> _ = f.write_text("min_map50: 0.5")
        >>> read_yaml_mapping(f, "policy")
        {'min_map50': 0.5}
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        raw = yaml.safe_load(read_utf8_text(path)) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from err
    if not isinstance(raw, dict):
        hint = f", e.g. '{example}'" if example else ""
        raise ConfigError(f"{path}: expected a mapping of {what} keys{hint}, got {type(raw).__name__}")
    return raw


def validation_problems(
    err: ValidationError, as_flags: bool = False, flags: Mapping[str, str] | None = None
) -> str:
    """One line listing each field pydantic rejected and why: ``key.path: message; ...``.

    With ``as_flags`` the keys are spelled as the CLI options a person typed (``max_upload_mb`` ->
    ``--max-upload-mb``); ``flags`` names the options whose spelling differs from their field
    (``{"image_format": "--format"}``).

    Example:
        >>> from pydantic import BaseModel
        >>> class Opts(BaseModel):
        ...     max_upload_mb: float
        >>> try:
        ...     Opts(max_upload_mb="big")
        ... except ValidationError as e:
        ...     print(validation_problems(e, as_flags=True))
        --max-upload-mb: Input should be a valid number, unable to parse string as a number
    """
    problems = []
    for e in err.errors():
        key = ".".join(map(str, e["loc"])) or "root"
        if as_flags:
            field = str(e["loc"][0]) if e["loc"] else ""
            if flags and field in flags:
                key = flags[field]
            else:
                key = "--" + "-".join(map(str, e["loc"])).replace("_", "-")
        problems.append(f"{key}: {e['msg']}")
    return "; ".join(problems)
