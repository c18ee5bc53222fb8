"""Reading config files at the edge: a bad YAML file becomes an error a person can act on."""

from __future__ import annotations

import copy
import re
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


_INDEX = re.compile(r"-?\d+")


def key_path_parts(key: str) -> list[str]:
    """The parts of a ``--set`` key: dots separate them, ``[i]`` is one more (``hooks[0].x`` = hooks, 0, x).

    An empty part or a stray bracket is a :class:`ConfigError` naming the key.

    Example:
        >>> key_path_parts("hooks[1].params.x"), key_path_parts("phases.phase1.job")
        (['hooks', '1', 'params', 'x'], ['phases', 'phase1', 'job'])
    """
    key = key.strip()
    parts = [part.strip() for part in re.sub(r"\[([^\[\]]*)\](?=[.\[]|$)", r".\1", key).split(".")]
    bad = next((part for part in parts if not part or "[" in part or "]" in part), None)
    if bad is not None:
        problem = f"stray bracket in '{bad}'" if bad else "empty part in the key"
        raise ConfigError(f"--set {key}: {problem} (use a.b, a.0.b or a[0].b)")
    return parts


def set_key_path(root: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``root`` with ``value`` at ``key``, the path of a ``--set key.path=value``; ``root`` stays.

    Dots reach into mappings, made where missing (or null); a list item is picked by index (``a.0.b`` or
    ``a[0].b``; ``-1`` is the last) or, where the items are mappings with an ``id``, by that id. A path that
    cannot be followed is a :class:`ConfigError` naming the key, the part that failed and what was expected.

    Example:
        >>> plan = {"phases": [{"id": "p1", "job": {"epochs": 9}}]}
        >>> set_key_path(plan, "phases.p1.job.epochs", 3)
        {'phases': [{'id': 'p1', 'job': {'epochs': 3}}]}
        >>> set_key_path(plan, "phases[0].job.epochs", 3) == set_key_path(plan, "phases.0.job.epochs", 3)
        True
        >>> set_key_path(plan, "phases.p2.job.epochs", 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.errors.ConfigError: --set phases.p2.job.epochs: phases has no item 'p2' (ids: p1; ...)
    """
    key = key.strip()
    parts = key_path_parts(key)
    out = copy.deepcopy(dict(root))
    node: Any = out
    where = ""
    for depth, part in enumerate(parts[:-1]):
        node, where = _child(node, part, parts[depth + 1], key, where)
    at, _ = _step(node, parts[-1], key, where)
    node[at] = value
    return out


def _step(node: dict[str, Any] | list[Any], part: str, key: str, where: str) -> tuple[Any, str]:
    """The key or index ``part`` names in ``node`` (the mapping or list at ``where``), and its path."""
    if isinstance(node, list):
        index = _list_item(node, part, key, where)
        return index, f"{where}[{part}]" if _INDEX.fullmatch(part) else f"{where}.{part}"
    return part, f"{where}.{part}" if where else part


def _child(node: dict[str, Any] | list[Any], part: str, then: str, key: str, where: str) -> tuple[Any, str]:
    """The mapping or list ``part`` names in ``node``, made (a mapping) where missing, and its path; ``then``
    is the part to be looked up in it next."""
    at, here = _step(node, part, key, where)
    child = node[at] if isinstance(node, list) else node.get(at)
    if child is None:
        if _INDEX.fullmatch(then):
            raise ConfigError(f"--set {key}: {here}[{int(then)}] is out of range (no {here} list)")
        child = node[at] = {}
    elif not isinstance(child, dict | list):
        raise ConfigError(
            f"--set {key}: {here} is {child!r}, not a mapping or list (no '{then}' in it; set {here} itself)"
        )
    return child, here


def _list_item(items: list[Any], part: str, key: str, where: str) -> int:
    """The index of the item that ``part`` picks in ``items`` (the list at ``where``): by ``id``, or index."""
    ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    ids = [None if i is None else str(i) for i in ids]
    if part in ids:
        return ids.index(part)
    count = f"{len(items)} item" + ("" if len(items) == 1 else "s")
    known = ", ".join(i for i in ids if i is not None)
    if _INDEX.fullmatch(part):
        if -len(items) <= int(part) < len(items):
            return int(part) % len(items)
        also = f"; ids: {known}" if known else ""
        raise ConfigError(f"--set {key}: {where}[{int(part)}] is out of range ({where} has {count}{also})")
    if known:
        raise ConfigError(
            f"--set {key}: {where} has no item '{part}' (ids: {known}; or an index, {where} has {count})"
        )
    raise ConfigError(
        f"--set {key}: {where} is a list: pick an item by index, not '{part}' ({where}.0 or {where}[0]; "
        f"{where} has {count})"
    )


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

    A model-level error (a ``model_validator``'s, about the fields together) has no key: its message alone.

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
        if not e["loc"]:  # a model-level check: about several fields or none, so no one key to name
            problems.append(e["msg"])
            continue
        key = ".".join(map(str, e["loc"]))
        if as_flags:
            flag = "--" + "-".join(map(str, e["loc"])).replace("_", "-")
            key = (flags or {}).get(str(e["loc"][0]), flag)
        problems.append(f"{key}: {e['msg']}")
    return "; ".join(problems)
