"""Atomic writes (``xraydet.io``): output gets the mode a plain write would give it, not tempfile's 0600."""

from __future__ import annotations

import stat
from pathlib import Path

from xraydet.io import atomic_directory, atomic_write_bytes, atomic_write_json


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_get_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # 0666 less the umask
    assert _mode(atomic_write_bytes(tmp_path / "a.bin", b"x")) == _mode(plain)
    assert _mode(atomic_write_json(tmp_path / "sub" / "b.json", {"a": 1})) == _mode(plain)
    atomic_write_bytes(tmp_path / "a.bin", b"again")  # replacing a file keeps the mode too
    assert _mode(tmp_path / "a.bin") == _mode(plain)


def test_atomic_directory_gets_the_mode_of_mkdir(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()  # 0777 less the umask
    with atomic_directory(tmp_path / "out") as tmp:
        (tmp / "f.txt").write_text("x")
    assert _mode(tmp_path / "out") == _mode(tmp_path / "plain")
    with atomic_directory(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "g.txt").write_text("y")
    assert _mode(tmp_path / "out") == _mode(tmp_path / "plain")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["g.txt"]
