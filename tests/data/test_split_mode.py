"""Copy or link: ``data split`` and ``data merge`` copy images unless ``--link``, which hard-links them (a
symlink where a hard link cannot be made). Labels are always copied. A mutation audit found "always link"
unnoticed: a hard link has the same bytes, so only the file's identity tells the two apart."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xraydet.data.split import place_file

SPLITS = {
    "train": {f"t{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(8)} | {"bg0": None},
    "val": {f"v{i}": ["1 0.5 0.5 0.2 0.2"] for i in range(3)},
}


@pytest.fixture
def source(yolo_set) -> Path:
    return yolo_set("src", ["knife", "gun"], SPLITS)


def _invoke(*args: object) -> None:
    from xraydet.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)


def _placed(out: Path, manifest: str) -> list[tuple[Path, Path]]:
    """(output image, its source) for every image the split/merge wrote, from its manifest."""
    files = json.loads((out / manifest).read_text())["files"]
    pairs = [(out / f["image"], Path(f["source"])) for f in files]
    assert len(pairs) == 12
    return pairs


def _labels(out: Path) -> list[Path]:
    found = sorted((out / "labels").rglob("*.txt"))
    assert len(found) == 11  # every image but the background one
    return found


def assert_copy(dest: Path, src: Path) -> None:
    assert not dest.is_symlink(), dest
    assert not os.path.samefile(dest, src), dest  # not a hard link either
    assert os.stat(dest).st_nlink == 1, dest
    assert dest.read_bytes() == src.read_bytes(), dest


def assert_hard_link(dest: Path, src: Path) -> None:
    assert not dest.is_symlink(), dest
    assert os.path.samefile(dest, src), dest


def _cross_device(src: object, dest: object, *args: object, **kw: object) -> None:
    raise OSError(errno.EXDEV, "Invalid cross-device link (simulated)")


# ------------------------------------------------------------------------------------------------ place_file
def test_place_file_copies_or_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src" / "a.png"
    src.parent.mkdir()
    src.write_bytes(b"\x89PNG pixels")
    place_file(src, tmp_path / "copy.png", link=False)
    assert_copy(tmp_path / "copy.png", src)
    place_file(src, tmp_path / "hard.png", link=True)
    assert_hard_link(tmp_path / "hard.png", src)
    monkeypatch.setattr(os, "link", _cross_device)
    monkeypatch.chdir(tmp_path)  # a source given relative to the working folder
    sym = tmp_path / "out" / "sym.png"
    sym.parent.mkdir()
    place_file(Path("src/a.png"), sym, link=True)
    assert sym.is_symlink()
    assert os.readlink(sym) == str(src.resolve())  # absolute: valid from the output folder, and if it moves
    assert sym.read_bytes() == src.read_bytes()


# ---------------------------------------------------------------------------------------------------- split
def test_split_copies_images_by_default(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "copied"
    _invoke("data", "split", source, "--out", out, "--val", "0.25")
    pairs = _placed(out, "split.json")
    for dest, src in pairs:
        assert_copy(dest, src)
    dest, src = pairs[0]
    before = dest.read_bytes()
    src.write_bytes(b"rewritten in place")  # as Ultralytics re-saves a corrupt JPEG: the copy keeps its bytes
    assert dest.read_bytes() == before
    assert all(not p.is_symlink() and os.stat(p).st_nlink == 1 for p in _labels(out))


def test_split_link_hard_links_images_and_copies_labels(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "linked"
    _invoke("data", "split", source, "--out", out, "--val", "0.25", "--link")
    for dest, src in _placed(out, "split.json"):
        assert_hard_link(dest, src)
    assert all(not p.is_symlink() and os.stat(p).st_nlink == 1 for p in _labels(out))


def test_split_link_symlinks_where_a_hard_link_cannot_be_made(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", _cross_device)
    out = tmp_path / "symlinked"
    _invoke("data", "split", source, "--out", out, "--val", "0.25", "--link")
    for dest, src in _placed(out, "split.json"):
        assert dest.is_symlink() and dest.resolve() == src.resolve(), dest


# ---------------------------------------------------------------------------------------------------- merge
@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_merge_copies_or_links_images(source: Path, tmp_path: Path, link: bool) -> None:
    out = tmp_path / "merged"
    _invoke("data", "merge", source, "--out", out, *(["--link"] if link else []))
    for dest, src in _placed(out, "merge.json"):
        (assert_hard_link if link else assert_copy)(dest, src)
    assert all(not p.is_symlink() and os.stat(p).st_nlink == 1 for p in _labels(out))
