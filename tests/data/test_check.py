"""``xraydet data check``: pure checks on hand-made inputs, real OPIXray, a copy with planted faults."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from xraydet.data.check import (
    CODES,
    Severity,
    check_box,
    check_dataset,
    check_label_line,
    duplicate_problems,
    end_marker_status,
    inspect_image_bytes,
    inspect_label_text,
)
from xraydet.data.dataset import IMAGE_SUFFIXES, DatasetError
from xraydet.data.image_check import ULTRALYTICS_FORMATS


def count_labels_by_hand(root: Path, split: str, nc: int) -> list[int]:
    """Instances per class counted straight from the label files (an independent reference)."""
    counts = [0] * nc
    for label in (root / "labels" / split).glob("*.txt"):
        for line in label.read_text().splitlines():
            if line.strip():
                counts[int(line.split()[0])] += 1
    return counts


def _encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


JPEG, PNG = _encoded("JPEG"), _encoded("PNG")


def _codes(found: list) -> list[str]:
    return [f[0] for f in found]


# ---------------------------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize(
    ("data", "suffix", "deep", "expected"),
    [
        (JPEG, ".jpg", False, []),
        (PNG, ".png", False, []),
        (JPEG[: len(JPEG) // 2], ".jpg", False, ["image-truncated"]),
        (JPEG[: len(JPEG) // 2], ".jpg", True, ["image-truncated"]),
        (PNG[:-30], ".png", False, ["image-truncated"]),
        (JPEG + b"\x00" * 16, ".jpg", False, ["image-trailing-bytes"]),
        (PNG, ".jpg", False, ["image-format-mismatch"]),
        (b"", ".jpg", False, ["image-unreadable"]),
        (b"not an image at all" * 20, ".jpg", False, ["image-unreadable"]),
        (JPEG[:20], ".jpg", False, ["image-unreadable"]),
        (_encoded("PNG", (8, 30)), ".png", False, ["image-too-small"]),
        (_encoded("BMP"), ".bmp", False, []),
        (_encoded("BMP")[:-10], ".bmp", False, ["image-truncated"]),
        (_encoded("GIF"), ".jpg", False, ["image-format-unsupported"]),
        (_encoded("GIF"), ".png", True, ["image-format-unsupported"]),
        (_encoded("WEBP"), ".png", False, ["image-format-mismatch"]),  # supported: Ultralytics reads it
    ],
    ids=[
        "jpeg",
        "png",
        "jpeg-cut",
        "jpeg-cut-deep",
        "png-cut",
        "jpeg-padded",
        "png-as-jpg",
        "empty",
        "garbage",
        "header-only",
        "tiny",
        "bmp",
        "bmp-cut",
        "gif-as-jpg",
        "gif-as-png-deep",
        "webp-as-png",
    ],
)
def test_inspect_image_bytes(data: bytes, suffix: str, deep: bool, expected: list[str]) -> None:
    info = inspect_image_bytes(data, suffix, deep=deep)
    assert _codes(info.problems) == expected
    assert info.digest is not None and len(info.digest) == 40


def test_supported_formats_are_ultralytics_own() -> None:
    """The formats check accepts are exactly those Ultralytics' check_image accepts (not a GIF)."""
    from ultralytics.data.utils import IMG_FORMATS

    assert {*IMG_FORMATS, "jpeg2000"} == set(ULTRALYTICS_FORMATS)
    assert "gif" not in ULTRALYTICS_FORMATS


def test_unreadable_image_message_names_the_file_not_a_buffer(yolo_set) -> None:
    """PIL quotes what it was given (an in-memory buffer): the message must name the file instead.

    With Ultralytics imported, as in training: its patched ``PIL.Image.open`` would turn an unidentified file
    into ``ModuleNotFoundError: pi_heif`` (a failed plugin install) unless xraydet uses PIL's own opener.
    """
    import ultralytics  # noqa: F401  (patches PIL.Image.open)
    from PIL import Image

    assert Image.open.__module__ != Image.__name__  # the patch is in place: the check below can fail
    path = yolo_set("unreadable", ["a"], {"train": {"ok": ["0 0.5 0.5 0.2 0.2"]}})
    (path.parent / "images" / "train" / "bag_07.jpg").write_bytes(b"not an image at all" * 20)
    [line] = [f"{p.code} {p.message}" for p in check_dataset(path).problems if p.code == "image-unreadable"]
    assert "'bag_07.jpg'" in line and "BytesIO" not in line, line
    assert "cannot identify image file" in line and "pi_heif" not in line, line


def test_header_mode_reads_size_and_deep_mode_decodes() -> None:
    info = inspect_image_bytes(JPEG, ".jpg")
    assert (info.fmt, info.width, info.height) == ("JPEG", 40, 30)
    # A PNG whose compressed pixels are damaged but whose end marker is intact: only --deep can tell.
    broken = bytearray(PNG)
    idat = broken.index(b"IDAT")
    broken[idat + 10 : idat + 60] = bytes(50)
    assert inspect_image_bytes(bytes(broken), ".png").problems == []
    assert _codes(inspect_image_bytes(bytes(broken), ".png", deep=True).problems) == ["image-corrupt"]


def test_end_marker_status() -> None:
    assert end_marker_status("JPEG", JPEG) == "ok"
    assert end_marker_status("JPEG", JPEG[:-1]) == "missing"
    assert end_marker_status("PNG", PNG + b"junk") == "trailing"
    assert end_marker_status("GIF", b"GIF89a") is None


@pytest.mark.parametrize(
    ("line", "nc", "expected", "usable"),
    [
        ("0 0.5 0.5 0.2 0.2", 5, [], True),
        ("4 0.5 0.5 0.2 0.2", 5, [], True),
        ("9 0.5 0.5 0.2 0.2", 5, ["class-out-of-range"], False),
        ("5 0.5 0.5 0.2 0.2", 5, ["class-out-of-range"], False),
        ("-1 0.5 0.5 0.2 0.2", 5, ["label-syntax"], False),
        ("1.5 0.5 0.5 0.2 0.2", 5, ["label-syntax"], False),
        ("nan 0.5 0.5 0.2 0.2", 5, ["label-syntax"], False),
        ("inf 0.5 0.5 0.2 0.2", 5, ["label-syntax"], False),
        ("0 nan 0.5 0.2 0.2", 5, ["label-syntax"], False),
        ("0 0.5 0.5 0.2", 5, ["label-syntax"], False),
        ("0 0.5 0.5 0.2 0.2 0.1", 5, ["label-syntax"], False),
        ("knife 0.5 0.5 0.2 0.2", 5, ["label-syntax"], False),
        ("0 0.5 0.5 0 0.2", 5, ["box-degenerate"], True),
        ("0 0.5 0.5 0.2 -0.1", 5, ["box-outside", "box-degenerate"], True),
        ("0 1.3 0.5 0.2 0.2", 5, ["box-outside"], True),
        ("0 1.005 0.5 0.008 0.2", 5, [], True),  # within Ultralytics' 1 % tolerance
        ("0 0.95 0.5 0.2 0.2", 5, ["box-clipped"], True),
        ("0 0.1 0.1 0.3 0.1 0.3 0.4", 5, [], True),  # polygon
        ("0 0.1 0.1 0.3 1.2 0.3 0.4", 5, ["box-outside"], True),
    ],
)
def test_check_label_line(line: str, nc: int, expected: list[str], usable: bool) -> None:
    row, found = check_label_line(line, nc, 416, 416)
    assert _codes(found) == expected
    assert (row is not None) == usable


def test_check_box_tiny_needs_image_size() -> None:
    assert _codes(check_box([0.5, 0.5, 0.001, 0.2])) == []
    assert _codes(check_box([0.5, 0.5, 0.001, 0.2], 416, 416)) == ["box-tiny"]


@pytest.mark.parametrize(
    ("text", "mixed"),
    [
        ("0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.3 0.1 0.3 0.4\n", True),
        ("0 0.1 0.1 0.3 0.1 0.3 0.4\n\n1 0.5 0.5 0.2 0.2\n", True),
        ("0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n", False),
        ("0 0.1 0.1 0.3 0.1 0.3 0.4\n0 0.2 0.2 0.4 0.2 0.4 0.5 0.2 0.5\n", False),
    ],
)
def test_label_file_mixing_boxes_and_polygons_is_an_error(text: str, mixed: bool) -> None:
    """Ultralytics drops such a file ("labels mix segment and detection rows")."""
    info = inspect_label_text(text, nc=2)
    found = [(code, line) for code, _, line in info.problems]
    assert found == ([("label-mixed", None)] if mixed else [])
    assert CODES["label-mixed"][0] == Severity.ERROR


def test_label_text_reports_lines_and_duplicates() -> None:
    info = inspect_label_text("0 0.5 0.5 0.1 0.1\n\n7 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n", nc=2)
    assert [(c, line) for c, _, line in info.problems] == [("class-out-of-range", 3), ("box-duplicate", 4)]
    assert info.rows.shape == (1, 5)


def test_duplicates_within_and_across_splits() -> None:
    items = [
        ("val", Path("v.jpg"), "h1"),
        ("train", Path("b.jpg"), "h1"),
        ("train", Path("a.jpg"), "h1"),
        ("train", Path("c.jpg"), "h2"),
    ]
    found = {(p.code, p.file, p.severity) for p in duplicate_problems(items, ["train", "val"])}
    assert found == {("duplicate-image", "b.jpg", Severity.WARNING), ("split-leak", "v.jpg", Severity.ERROR)}


def test_every_code_has_a_severity_and_meaning() -> None:
    assert all(isinstance(sev, Severity) and text for sev, text in CODES.values())


# ---------------------------------------------------------------------------------------------- data sets


def test_hand_made_set_reports_each_kind(yolo_set, image_writer) -> None:
    path = yolo_set(
        "hand",
        ["knife", "gun", "bottle"],
        {
            "train": {f"k{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(30)}
            | {"g0": ["1 0.3 0.3 0.2 0.2", "1 0.7 0.7 0.2 0.2"], "bg": None, "empty": []},
            "val": {"v0": ["0 0.5 0.5 0.2 0.2"], "v1": ["1 0.5 0.5 0.2 0.2"]},
        },
    )
    root = path.parent
    (root / "labels" / "val" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / "classes.txt").write_text(
        "knife\ngun\nbottle\n"
    )  # LabelImg leftover: ignored
    image_writer(root / "images" / "train" / "k0_copy.png", 1)  # same pixels and bytes as k0
    (root / "labels" / "train" / "k0_copy.txt").write_text("0 0.5 0.5 0.2 0.2\n")

    report = check_dataset(path, workers=2)
    codes = report.counts_by_code()
    assert report.ok and report.n_errors == 0
    assert codes["label-missing"] == 1 and codes["label-orphan"] == 1 and codes["duplicate-image"] == 1
    assert codes["class-imbalance"] == 1  # gun 2 + 1 vs knife 32: below 10 %
    absent = {(p.split, p.message) for p in report.problems if p.code == "class-absent"}
    assert absent == {("train", "no 'bottle' instances in train"), ("val", "no 'bottle' instances in val")}
    [missing] = [p for p in report.problems if p.code == "label-missing"]
    assert missing.file == str(root / "images" / "train" / "bg.png")
    s = report.stats.splits
    assert s["train"].images == 34 and s["train"].background == 2
    assert s["train"].instances == [31, 2, 0] and s["train"].images_per_class == [31, 1, 0]
    assert s["val"].instances == [1, 1, 0]


def test_bad_files_never_crash(yolo_set, image_writer) -> None:
    path = yolo_set("bad", ["a"], {"train": {"ok": ["0 0.5 0.5 0.2 0.2"], "x": ["0 0.5 0.5 0.2 0.2"]}})
    root = path.parent
    (root / "images" / "train" / "garbage.jpg").write_bytes(b"\x00\x01garbage" * 100)
    (root / "images" / "train" / "empty.png").write_bytes(b"")
    (root / "labels" / "train" / "x.txt").write_bytes(b"\xff\xfe\x00binary\x00")
    image_writer(root / "images" / "train" / "dirlabel.png", 7)
    (root / "labels" / "train" / "dirlabel.txt").mkdir()
    image_writer(root / "images" / "train" / "bom.png", 8)
    (root / "labels" / "train" / "bom.txt").write_bytes("\ufeff0 0.5 0.5 0.2 0.2\n".encode())
    report = check_dataset(path)
    by_file = {(Path(p.file).name, p.code) for p in report.problems if p.file}
    assert {
        ("garbage.jpg", "image-unreadable"),
        ("empty.png", "image-unreadable"),
        ("x.txt", "label-unreadable"),
        ("dirlabel.txt", "label-unreadable"),
    } <= by_file
    assert not any(name == "bom.txt" for name, _ in by_file)  # a UTF-8 BOM is fine (Ultralytics reads it)
    assert not report.ok


def test_label_that_is_not_utf8_is_reported_with_its_line(yolo_set) -> None:
    path = yolo_set("latin1", ["a"], {"train": {"ok": ["0 0.5 0.5 0.2 0.2"], "x": ["0 0.5 0.5 0.2 0.2"]}})
    label = path.parent / "labels" / "train" / "x.txt"
    label.write_bytes(b"0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 caf\xe9\n")  # line 2 in Latin-1
    report = check_dataset(path)
    [found] = [p for p in report.problems if p.code == "label-unreadable"]
    assert (found.file, found.line, found.where) == (str(label), 2, f"{label}:2")
    assert found.message == "not UTF-8 text: byte 0xe9 at offset 39 (invalid continuation byte)"
    assert not report.ok


def test_deep_check_reports_pixels_that_do_not_decode(yolo_set) -> None:
    path = yolo_set("corrupt", ["a"], {"train": {"ok": ["0 0.5 0.5 0.2 0.2"], "bad": ["0 0.5 0.5 0.2 0.2"]}})
    image = path.parent / "images" / "train" / "bad.png"
    broken = bytearray(image.read_bytes())
    idat = broken.index(b"IDAT")
    broken[idat + 10 : idat + 60] = bytes(50)  # damaged pixels, intact end marker
    image.write_bytes(bytes(broken))
    assert check_dataset(path).ok  # the header check cannot see it
    report = check_dataset(path, deep=True)
    assert [(p.code, p.severity, p.file) for p in report.problems] == [("image-corrupt", "error", str(image))]
    assert not report.ok


def test_missing_and_empty_split_are_errors(tmp_path: Path) -> None:
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/nowhere\nnames: [a]\n")
    report = check_dataset(tmp_path)
    assert {p.code for p in report.errors} == {"split-empty", "split-missing"}
    [missing] = [p for p in report.errors if p.code == "split-missing"]
    assert missing.file == str(tmp_path / "images" / "nowhere")
    assert missing.file not in missing.message  # the path is printed once, as the problem's file


def test_data_set_without_any_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "images" / "holdout").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("holdout: images/holdout\nnames: [a]\n")
    with pytest.raises(DatasetError, match="no splits to check") as err:
        check_dataset(tmp_path)
    assert str(tmp_path / "data.yaml") in str(err.value)


def test_a_split_chosen_twice_is_checked_once(yolo_set) -> None:
    path = yolo_set(
        "twice", ["a"], {"train": {"t": ["0 0.5 0.5 0.2 0.2"]}, "val": {"v": ["0 0.5 0.5 0.2 0.2"]}}
    )
    report = check_dataset(path, splits=["val", "val"])
    assert report.ok and report.problems == [] and report.n_images == 1 and report.splits == ["val"]


def test_hidden_files_are_neither_images_nor_orphans(yolo_set) -> None:
    path = yolo_set("hidden", ["a"], {"train": {"t": ["0 0.5 0.5 0.2 0.2"]}})
    root = path.parent
    (root / "images" / "train" / "._t.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "labels" / "train" / "._t.txt").write_bytes(b"\x00\x05\x16\x07")
    report = check_dataset(path)
    assert report.n_images == 1 and report.problems == []


def test_gif_named_jpg_and_mixed_label_fail_the_check(yolo_set) -> None:
    path = yolo_set("fmt", ["a"], {"train": {"ok": ["0 0.5 0.5 0.2 0.2"], "mix": ["0 0.5 0.5 0.2 0.2"]}})
    root = path.parent
    (root / "images" / "train" / "anim.jpg").write_bytes(_encoded("GIF"))
    (root / "labels" / "train" / "anim.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "mix.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.3 0.1 0.3 0.4\n")
    report = check_dataset(path)
    found = {(p.code, Path(p.file or "").name) for p in report.errors}
    assert found == {("image-format-unsupported", "anim.jpg"), ("label-mixed", "mix.txt")}


def test_check_help_lists_every_code() -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    result = CliRunner().invoke(app, ["data", "check", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for code, (severity, _) in CODES.items():
        assert f"{code} ({severity.value})" in result.output, code


def test_negatives_folder_is_background_by_design(negatives_dir: Path) -> None:
    report = check_dataset(negatives_dir)
    n_files = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in negatives_dir.rglob("*"))
    assert report.names == [] and report.n_images == n_files > 0
    assert report.problems == [] and report.stats.splits["val"].background == report.n_images


def test_real_opixray_is_clean(opixray_yaml: Path) -> None:
    report = check_dataset(opixray_yaml)
    assert report.n_images == 2350 and len(report.names) == 5
    assert report.n_errors == 0 and report.ok
    root = opixray_yaml.parent
    for split in ("train", "val"):
        assert report.stats.splits[split].instances == count_labels_by_hand(root, split, 5)
    assert sum(report.stats.instances_per_class()) == report.stats.box_sizes.boxes


def test_planted_faults_are_each_reported_by_file_and_line(faulty_opixray: Any) -> None:
    f = faulty_opixray
    for deep in (False, True):
        report = check_dataset(f.yaml, deep=deep)
        found = {(p.code, p.file, p.line) for p in report.errors}
        assert ("image-truncated", str(f.truncated_image), None) in found
        assert ("class-out-of-range", str(f.class9_label), 2) in found
        assert ("box-degenerate", str(f.zero_width_label), 1) in found
        assert ("box-outside", str(f.coord_13_label), 1) in found
        assert ("split-leak", str(f.leaked_val_image), None) in found
        [leak] = [p for p in report.errors if p.code == "split-leak"]
        assert str(f.leaked_from) in leak.message
        assert len(found) == 5, found


def test_cli_check_exit_codes_and_json(faulty_opixray: Any, yolo_set, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "check", str(faulty_opixray.yaml), "--json"])
    assert result.exit_code == 1, result.output
    body = json.loads(result.stdout)
    assert body["ok"] is False and body["n_errors"] == 5 and body["n_images"] == 31
    lines = {(p["code"], Path(p["file"]).name, p["line"]) for p in body["problems"] if p["file"]}
    assert ("class-out-of-range", faulty_opixray.class9_label.name, 2) in lines

    result = runner.invoke(
        app, ["data", "check", str(faulty_opixray.yaml), "--json-out", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 1
    assert "box-outside" in result.stdout and faulty_opixray.coord_13_label.name in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["n_errors"] == 5

    clean = yolo_set("clean", ["a"], {"train": {"x": ["0 0.5 0.5 0.2 0.2"], "bg": None}})
    result = runner.invoke(app, ["data", "check", str(clean)])
    assert result.exit_code == 0, result.output  # a warning (background image) only
    assert "label-missing" in result.stdout


def test_symlink_to_a_missing_image_is_reported(yolo_set) -> None:
    """A dangling image symlink was left out silently (0 errors), though Ultralytics' glob lists it and then
    drops it as corrupt; its label file was reported only as an orphan."""
    path = yolo_set("links", ["a"], {"train": {"ok": ["0 0.5 0.5 0.2 0.2"]}})
    root = path.parent
    (root / "images" / "train" / "gone.jpg").symlink_to(root / "elsewhere" / "gone.jpg")
    (root / "labels" / "train" / "gone.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    report = check_dataset(path)
    found = [(Path(p.file).name, p.code) for p in report.problems if p.file and "gone" in p.file]
    assert ("gone.jpg", "image-unreadable") in found
    assert not report.ok
