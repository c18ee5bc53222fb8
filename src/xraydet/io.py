"""Atomic file output: everything xraydet writes appears whole or not at all.

Temp files and folders are made private (0600 / 0700) by ``tempfile``; before the rename they get the mode a
plain ``open()`` / ``mkdir()`` would have given them (0666 / 0777 less the umask), so other users and tools
can read the output as usual.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from xraydet.errors import XrayDetError


def _read_umask() -> int:
    """The process umask (setting it needs a value: set 0, restore at once; done once, at import)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks: how xraydet identifies a model file.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as fh:
        ...     sha256_file(fh.name)[:12]
        'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TextDecodeError(XrayDetError, ValueError):
    """A file's bytes that are not text in the expected encoding: where (byte offset, line) and why.

    Callers usually turn it into their own error type (:class:`~xraydet.errors.ConfigError`,
    ``DatasetError``) with :attr:`offset`, :attr:`line` and :attr:`detail`.
    """

    def __init__(
        self, path: str | os.PathLike[str], encoding: str, offset: int, line: int, byte: int, reason: str
    ) -> None:
        self.path = Path(path)
        self.encoding = encoding
        self.offset = offset  # of the first bad byte, from the start of the file
        self.line = line  # 1-based line of that byte
        self.byte = byte
        self.reason = reason  # Python's words: "invalid start byte", "unexpected end of data", ...
        super().__init__(f"{path}:{line}: {self.detail}")

    @property
    def detail(self) -> str:
        """The message without its ``path:line:`` prefix."""
        return f"not {self.encoding} text: byte 0x{self.byte:02x} at offset {self.offset} ({self.reason})"


def _encoding_label(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return encoding
    return "UTF-8" if name in ("utf-8", "utf-8-sig") else name


def decode_text(data: bytes, path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    """The bytes of ``path`` as text; bytes that are not ``encoding`` raise :class:`TextDecodeError`.

    The error names the file, the line and the byte offset of the first bad byte, and Python's reason.

    Example:
        >>> decode_text(b"name: caf\\xc3\\xa9", "a.yaml")
        'name: café'
        >>> decode_text(b"a: 1\\nname: caf\\xe9 noir\\n", "a.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.io.TextDecodeError: a.yaml:2: not UTF-8 text: byte 0xe9 at offset 14 (invalid continuation...
    """
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        # err.start counts from err.object, which "utf-8-sig" gives without the BOM it skipped
        offset = err.start + len(data) - len(err.object)
        line = data[:offset].count(b"\n") + 1
        raise TextDecodeError(
            path, _encoding_label(encoding), offset, line, data[offset], err.reason
        ) from err


TEMP_FILE_SUFFIX, TEMP_DIR_SUFFIX = ".tmp", ".partial"
# ``.NAME.<8 random>.tmp`` / ``.partial``: the names mkstemp / mkdtemp give an atomic write's temp beside NAME
_TEMP_NAME = re.compile(
    rf"^\.(?P<name>.+)\.[A-Za-z0-9_]{{8}}(?:{re.escape(TEMP_FILE_SUFFIX)}|{re.escape(TEMP_DIR_SUFFIX)})$"
)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def temp_target(path: Path) -> Path | None:
    """The file or folder that ``path``, an atomic write's temp beside it, stands in for (None if not one).

    Example:
        >>> temp_target(Path("/out/.r.json.wkymwuej.tmp")), temp_target(Path("/out/r.json"))
        (PosixPath('/out/r.json'), None)
    """
    match = _TEMP_NAME.match(path.name)
    return path.with_name(match["name"]) if match else None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    path = Path(path)
    if path.is_dir():
        raise XrayDetError(f"{path}: is a folder; cannot write a file there")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_FILE_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def check_output_dir(path: str | os.PathLike[str], markers: tuple[str, ...], what: str) -> None:
    """Refuse to replace ``path`` unless it is missing, an empty folder, or an earlier output of this kind.

    An earlier output holds one of ``markers`` (e.g. ``report.json``); anything else (a data set folder, a
    file) is refused with an :class:`~xraydet.errors.XrayDetError` naming the path, so a mistyped ``--out``
    never deletes someone's files.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> check_output_dir(root / "new", ("report.json",), "evaluation report")
        >>> _ = (root / "notes.txt").write_text("x")
        >>> check_output_dir(root, ("report.json",), "evaluation report")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.errors.XrayDetError: ...: not empty and not an earlier evaluation report (no report.json)...
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise XrayDetError(f"{path}: exists and is not a folder; give a new or empty folder for the {what}")
    if not any(path.iterdir()) or any((path / m).exists() for m in markers):
        return
    raise XrayDetError(
        f"{path}: not empty and not an earlier {what} (no {' or '.join(markers)}), so it is not replaced; "
        "give a new or empty folder"
    )


def refuse_output_over_inputs(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse an output folder that is one of the inputs or holds one: replacing it would delete the input.

    Example:
        >>> refuse_output_over_inputs("sets", ["sets/opixray"])
        Traceback (most recent call last):
        ...
        xraydet.errors.XrayDetError: sets: the output would replace the input sets/opixray ...
    """
    final = Path(out).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == final or final in source.parents:
            raise XrayDetError(
                f"{out}: the output would replace the input {given} (the output folder is replaced whole); "
                "give an output folder outside the inputs"
            )


def remove_path(path: Path) -> None:
    """Remove whatever is at ``path``: a folder tree, a file or a link (not what a link points to).

    Nothing there is fine, and so is a removal that fails (what is left is only ever stale output).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "a.txt").write_text("x")
        >>> remove_path(root / "a.txt"); remove_path(root / "missing"); remove_path(root)
        >>> root.exists()
        False
    """
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


@contextmanager
def atomic_directory(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it to ``final`` only on success.

    An exception (or an interrupt) inside the block removes the temporary directory, so a half-made output
    never appears at ``final``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> with atomic_directory(root / "out") as tmp:
        ...     _ = (tmp / "a.txt").write_text("x")
        >>> (root / "out" / "a.txt").read_text()
        'x'
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=TEMP_DIR_SUFFIX, dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE)
        if final.exists():
            trash = final.with_name(f".{final.name}.old")
            remove_path(trash)  # a leftover of a run that died between the two renames
            os.replace(final, trash)
            os.replace(tmp, final)
            remove_path(trash)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
