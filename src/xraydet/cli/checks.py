"""Checks of output paths that the commands make before any work, so a mistyped path costs nothing."""

from __future__ import annotations

from pathlib import Path

from xraydet.errors import ConfigError


def output_folder(out: Path, flag: str = "--out") -> None:
    """Refuse an ``out`` that exists and is not a folder: ``--overwrite`` replaces a folder, never a file.

    Example:
        >>> import tempfile
        >>> note = Path(tempfile.mkdtemp()) / "notes.txt"
        >>> _ = note.write_text("keep")
        >>> output_folder(note)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.errors.ConfigError: --out .../notes.txt: exists and is not a folder; ...
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"{flag} {out}: exists and is not a folder; give a folder (--overwrite replaces an earlier "
            "output folder, never a file)"
        )


def onnx_file(out: Path | None, flag: str = "--out") -> None:
    """Refuse an ONNX destination that is a folder or does not end in ``.onnx`` (the backend goes by suffix).

    Example:
        >>> onnx_file(Path("model.pt"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.errors.ConfigError: --out model.pt: give a path ending in .onnx ...
    """
    if out is None:
        return
    if out.is_dir():
        raise ConfigError(f"{flag} {out}: is a folder; give the path of the .onnx file to write")
    if out.suffix.lower() != ".onnx":
        raise ConfigError(
            f"{flag} {out}: give a path ending in .onnx (serve and eval choose the backend by the suffix, "
            "and any other name could replace weights or another file)"
        )


def output_file(out: Path | None, flag: str = "--out") -> None:
    """Refuse a file destination that is a folder, before the work rather than after it.

    Example:
        >>> output_file(Path("."))
        Traceback (most recent call last):
        ...
        xraydet.errors.ConfigError: --out .: is a folder; give the path of a file to write
    """
    if out is not None and out.is_dir():
        raise ConfigError(f"{flag} {out}: is a folder; give the path of a file to write")
