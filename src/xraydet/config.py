"""Reading config files at the edge: a bad YAML file becomes an error a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

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


def refuse_bool(value: Any) -> Any:
    """A before-validator of numeric settings: a boolean is not a number.

    Pydantic's lax mode reads ``true`` as 1 (and YAML 1.1 reads ``yes``/``on`` as ``true``), so ``epochs:
    true`` would train one epoch.

    Example:
        >>> refuse_bool(3), refuse_bool(0.5)
        (3, 0.5)
    """
    if isinstance(value, bool):
        raise PydanticCustomError(
            "bool_not_number", "expected a number, got the boolean {value}", {"value": str(value).lower()}
        )
    return value


# First in the ``Annotated`` type of every numeric setting read from a file (jobs, hooks, plans, policies).
NotBool = BeforeValidator(refuse_bool)


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping: YAML forbids it, PyYAML keeps the last
    one silently (a second ``transitions:`` would drop the first's rules)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_unique_keys(node)
        return super().construct_document(node)


def _check_unique_keys(root: yaml.Node) -> None:
    """Raise a YAML error at the second of two equal keys of a mapping; keys merged in with ``<<`` may be
    overridden, as YAML intends."""
    stack, visited = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in visited:  # an alias is the same node; a recursive anchor would loop
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                ident = (key.tag, key.value)
                if ident in first:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key '{key.value}' (first at line {first[ident]})",
                        problem_mark=key.start_mark,
                    )
                first[ident] = key.start_mark.line + 1
            stack.extend(item for pair in reversed(node.value) for item in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also refuses duplicate keys (a :class:`yaml.YAMLError` with the line).

    Example:
        >>> load_yaml("epochs: 200\\nimgsz: 640\\nepochs: 2\\n")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        yaml.constructor.ConstructorError: duplicate key 'epochs' (first at line 1)
        ...
    """
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml_mapping(path: str | Path, what: str = "config", example: str = "") -> dict[str, Any]:
    """Load a YAML file that must hold a mapping; errors name the file (and line) and what was expected.

    An empty file reads as ``{}``; a key written twice is an error (:func:`load_yaml`).

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
        raw = load_yaml(read_utf8_text(path)) or {}
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
