"""``xraydet.io``: atomic output gets the mode a plain write would give it, not tempfile's 0600; the one text
decoder config and data-set readers share names the file, line and byte."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from xraydet.config import read_utf8_text
from xraydet.data.dataset import DatasetError, read_text_file
from xraydet.errors import ConfigError
from xraydet.io import TextDecodeError, atomic_directory, atomic_write_bytes, atomic_write_json, decode_text


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


def test_atomic_directory_replacing_a_file_leaves_no_trash(tmp_path: Path) -> None:
    """The replaced file went to ``.a.txt.old`` and stayed there (a tree removal skips a file); the next
    overwrite then tried to rename the new folder onto that file and crashed with NotADirectoryError."""
    (tmp_path / "a.txt").write_text("hi\n")
    for n in range(2):
        with atomic_directory(tmp_path / "a.txt", overwrite=True) as tmp:
            (tmp / "f.txt").write_text(str(n))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
        assert (tmp_path / "a.txt" / "f.txt").read_text() == str(n)


@pytest.mark.parametrize("leftover", ["file", "folder", "link"])
def test_atomic_directory_clears_a_trash_left_by_a_crash(tmp_path: Path, leftover: str) -> None:
    """A ``.out.old`` left by a run that died between its two renames does not break the next overwrite."""
    out, trash, kept = tmp_path / "out", tmp_path / ".out.old", tmp_path / "kept"
    out.mkdir()
    kept.mkdir()
    (kept / "k.txt").write_text("keep")
    if leftover == "file":
        trash.write_text("stale")
    elif leftover == "folder":
        (trash / "sub").mkdir(parents=True)
    else:
        trash.symlink_to(kept, target_is_directory=True)
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "out"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert (kept / "k.txt").read_text() == "keep"  # a link's target is not removed


LATIN1 = b"names:\n  - knife\n  - caf\xe9\n"  # the third line saved as Latin-1: byte 24 is not UTF-8


def test_decode_text_names_line_byte_and_reason() -> None:
    assert decode_text(b"\xef\xbb\xbfa", "x.txt", "utf-8-sig") == "a"  # a BOM is fine where asked for
    assert decode_text(b"\xef\xbb\xbfa", "x.txt") == "\ufeffa"
    with pytest.raises(TextDecodeError) as err:
        decode_text(LATIN1, "x.yaml")
    e = err.value
    assert (e.path, e.encoding, e.offset, e.line, e.byte) == (Path("x.yaml"), "UTF-8", 24, 3, 0xE9)
    assert str(e) == "x.yaml:3: not UTF-8 text: byte 0xe9 at offset 24 (invalid continuation byte)"
    with pytest.raises(TextDecodeError, match=r"^x:1: not UTF-8 text: byte 0xff at offset 0 \(invalid start"):
        decode_text(b"\xff", "x", "utf-8-sig")
    with pytest.raises(TextDecodeError, match=r"^x:1: not ascii text: byte 0xe9 at offset 1 "):
        decode_text(b"a\xe9", "x", "ascii")
    with pytest.raises(TextDecodeError) as bom_err:  # offsets count the BOM that utf-8-sig skips
        decode_text(b"\xef\xbb\xbf\n\na\xe9", "x", "utf-8-sig")
    assert str(bom_err.value) == "x:3: not UTF-8 text: byte 0xe9 at offset 6 (unexpected end of data)"


def test_config_and_data_set_readers_keep_their_error_types_and_messages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(LATIN1)
    with pytest.raises(ConfigError) as config_err:
        read_utf8_text(bad)
    assert str(config_err.value) == f"{bad}: not UTF-8 text (byte 24)"
    with pytest.raises(DatasetError) as data_err:
        read_text_file(bad)
    message = "not UTF-8 text: byte 0xe9 at offset 24 (invalid continuation byte)"
    assert str(data_err.value) == f"{bad}:3: {message}" and data_err.value.message == message
    assert (data_err.value.path, data_err.value.line) == (bad, 3)
    assert not isinstance(config_err.value, DatasetError) and not isinstance(data_err.value, ConfigError)
    assert isinstance(config_err.value.__cause__, TextDecodeError)
    assert isinstance(data_err.value.__cause__, TextDecodeError)
    good = tmp_path / "good.yaml"
    good.write_bytes("names: [café]\n".encode())
    assert read_utf8_text(good) == read_text_file(good) == "names: [café]\n"
