"""``xraydet data merge``: union of classes with ids remapped (checked by reading labels back through names),
renames, collisions, threats, dry run and atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import xraydet.data.merge as merge_mod
from xraydet.data.check import check_dataset
from xraydet.data.dataset import DatasetError, label_path_for, load_dataset
from xraydet.data.merge import merge_datasets, parse_renames, unify_names, unify_threats
from xraydet.errors import ConfigError, XrayDetError


def _sources_by_content(yamls: list[Path], file_sha1) -> dict[str, list[tuple[list[str], str | None]]]:
    """sha1 of each source image -> [(that source's class names, label text or None)]."""
    found: dict[str, list[tuple[list[str], str | None]]] = {}
    for y in yamls:
        ds = load_dataset(y)
        for split in ds.splits:
            for image in ds.images(split):
                label = label_path_for(image)
                found.setdefault(file_sha1(image), []).append(
                    (ds.names, label.read_text() if label.exists() else None)
                )
    return found


def _named_lines(text: str | None, names: list[str]) -> list[tuple[str, ...]]:
    """Label lines with the class id replaced by its name: what a box *means*, independent of numbering."""
    if text is None:
        return []
    return [(names[int(line.split()[0])], *line.split()[1:]) for line in text.splitlines() if line.strip()]


def assert_labels_mean_the_same(merged_yaml: Path, sources: list[Path], file_sha1) -> int:
    """Every merged image's boxes carry, by NAME, the classes its source gave them; returns images checked."""
    originals = _sources_by_content(sources, file_sha1)
    merged = load_dataset(merged_yaml)
    n = 0
    for split in merged.splits:
        for image in merged.images(split):
            label = label_path_for(image)
            got = _named_lines(label.read_text() if label.exists() else None, merged.names)
            candidates = [_named_lines(text, names) for names, text in originals[file_sha1(image)]]
            assert got in candidates, f"{image}: {got} not in {candidates}"
            n += 1
    assert n == sum(len(v) for v in originals.values())
    return n


def test_merge_real_opixray_with_synth(
    opixray_yaml: Path, synth_yaml: Path, tmp_path: Path, file_sha1
) -> None:
    src, syn = load_dataset(opixray_yaml), load_dataset(synth_yaml)
    result = merge_datasets([opixray_yaml, synth_yaml], tmp_path / "merged")
    expected = src.names + [n for n in syn.names if n not in src.names]
    assert result.names == expected and len(expected) == len(src.names) + len(syn.names)
    assert result.threats == src.threats + [t for t in syn.threats if t not in src.threats]
    merged = load_dataset(tmp_path / "merged")
    assert merged.names == expected and merged.threats == result.threats
    assert set(merged.splits) == {"train", "val"}
    for split in ("train", "val"):
        assert len(merged.images(split)) == len(src.images(split)) + len(syn.images(split))
    assert (
        assert_labels_mean_the_same(tmp_path / "merged" / "data.yaml", [opixray_yaml, synth_yaml], file_sha1)
        > 2350
    )
    synth_summary = result.sources[1]
    assert synth_summary.id_map == [len(src.names) + i for i in range(len(syn.names))]
    assert check_dataset(tmp_path / "merged").n_errors == 0


def _one_box_per_class(prefix: str, nc: int) -> dict[str, dict[str, list[str]]]:
    return {
        "train": {
            f"{prefix}{i}": [f"{i} 0.5 0.5 0.2 0.2", f"{(i + 1) % nc} 0.3 0.3 0.1 0.1"] for i in range(nc)
        },
        "val": {f"{prefix}v{i}": [f"{i} 0.4 0.4 0.2 0.2"] for i in range(nc)},
    }


def test_12_plus_16_classes_without_overlap_gives_28(yolo_set, file_sha1) -> None:
    luggage_names = [f"luggage_{i}" for i in range(12)]
    cargo_names = [f"cargo_{i}" for i in range(16)]
    a = yolo_set("luggage", luggage_names, _one_box_per_class("l", 12), threats=luggage_names[:3])
    b = yolo_set("cargo", cargo_names, _one_box_per_class("c", 16), threats=cargo_names[-2:], seed=1)
    result = merge_datasets([a, b], a.parent.parent / "m")
    assert result.names == luggage_names + cargo_names and len(result.names) == 28
    assert result.threats == luggage_names[:3] + cargo_names[-2:]
    assert result.sources[1].id_map == list(range(12, 28))
    assert result.stats.instances_per_class() == [3] * 28
    assert assert_labels_mean_the_same(a.parent.parent / "m" / "data.yaml", [a, b], file_sha1) == 56


@pytest.fixture
def overlapping(yolo_set) -> tuple[Path, Path]:
    a = yolo_set(
        "a",
        ["Knife", "Gun"],
        {"train": {"img0": ["0 0.5 0.5 0.2 0.2"], "img1": ["1 0.5 0.5 0.2 0.2"]}},
        threats=["Knife", "Gun"],
    )
    b = yolo_set(
        "b",
        ["knife", "pistol", "bottle"],
        {
            "train": {"img0": ["2 0.5 0.5 0.2 0.2", "1 0.2 0.2 0.1 0.1"], "img2": ["0 0.5 0.5 0.2 0.2"]},
            "val": {"v0": ["1 0.5 0.5 0.2 0.2"], "bg": None},
        },
        threats=["knife", "pistol"],
        seed=1,
    )
    return a, b


def test_without_options_names_are_exact(overlapping, tmp_path: Path, file_sha1) -> None:
    result = merge_datasets(list(overlapping), tmp_path / "m")
    assert result.names == ["Knife", "Gun", "knife", "pistol", "bottle"]
    assert result.threats == ["Knife", "Gun", "knife", "pistol"]
    assert_labels_mean_the_same(tmp_path / "m" / "data.yaml", list(overlapping), file_sha1)


def test_rename_and_case_insensitive_union(overlapping, tmp_path: Path) -> None:
    a, b = overlapping
    result = merge_datasets([a, b], tmp_path / "m", renames={"pistol": "Gun"}, case_insensitive=True)
    assert result.names == ["Knife", "Gun", "bottle"] and result.threats == ["Knife", "Gun"]
    assert result.sources[1].class_map == {"knife": "Knife", "pistol": "Gun", "bottle": "bottle"}
    # b's img0 collided with a's img0 and was renamed; its bottle (2) stays 2, its pistol (1) becomes Gun (1)
    assert (
        tmp_path / "m" / "labels" / "train" / "b__img0.txt"
    ).read_text() == "2 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n"
    assert (tmp_path / "m" / "labels" / "train" / "img0.txt").read_text() == "0 0.5 0.5 0.2 0.2\n"
    assert (tmp_path / "m" / "labels" / "train" / "img2.txt").read_text() == "0 0.5 0.5 0.2 0.2\n"
    assert (tmp_path / "m" / "labels" / "val" / "v0.txt").read_text() == "1 0.5 0.5 0.2 0.2\n"
    assert not (tmp_path / "m" / "labels" / "val" / "bg.txt").exists()  # a background image stays one
    assert result.renamed_files == 1 and result.stats.splits["val"].background == 1


def test_map_file_per_source_and_global(overlapping, tmp_path: Path) -> None:
    a, b = overlapping
    map_file = tmp_path / "map.yaml"
    map_file.write_text("rename:\n  Knife: blade\n  knife: blade\nsources:\n  b:\n    pistol: Gun\n")
    result = merge_datasets([a, b], tmp_path / "m", map_file=map_file)
    assert result.names == ["blade", "Gun", "bottle"] and result.threats == ["blade", "Gun"]
    flat = tmp_path / "flat.yaml"
    flat.write_text("pistol: Gun\n")
    assert merge_datasets([a, b], tmp_path / "m2", map_file=flat, dry_run=True).names == [
        "Knife",
        "Gun",
        "knife",
        "bottle",
    ]
    # --rename applies after the map file
    r = merge_datasets([a, b], tmp_path / "m3", map_file=flat, renames={"Gun": "firearm"}, dry_run=True)
    assert r.names == ["Knife", "firearm", "knife", "bottle"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"renames": {"sword": "knife"}}, "unknown class"),
        ({"map_file": "bad_source"}, "unknown source"),
    ],
)
def test_bad_renames_are_refused(overlapping, tmp_path: Path, kwargs: dict, match: str) -> None:
    if kwargs.get("map_file") == "bad_source":
        (tmp_path / "map.yaml").write_text("sources:\n  nosuch:\n    a: b\n")
        kwargs = {"map_file": tmp_path / "map.yaml"}
    with pytest.raises(ConfigError, match=match):
        merge_datasets(list(overlapping), tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("renmae: {a: b}\n", r"key\(s\) 'renmae' \(did you mean 'rename'\?\); .*'rename:' and 'sources:'"),
        ("rename: {a: b}\nsource: {x: {a: b}}\n", r"unknown key\(s\) 'source' \(did you mean 'sources'\?\)"),
        ("knives: {a: b}\n", r"unknown key\(s\) 'knives'; a map file's top-level keys are 'rename:'"),
    ],
)
def test_a_misspelt_map_file_section_is_named(tmp_path: Path, text: str, match: str) -> None:
    """``renmae: {a: b}`` was read as a flat rename of a class 'renmae' and reported as a bad 'rename'."""
    map_file = tmp_path / "map.yaml"
    map_file.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        merge_mod.load_map_file(map_file)
    assert str(err.value).startswith(f"{map_file}: ")
    map_file.write_text("Knife: knife\n7: gun\n")  # a flat mapping is still a rename of every source
    assert merge_mod.load_map_file(map_file) == ({"Knife": "knife", "7": "gun"}, {})


def test_parse_renames() -> None:
    assert parse_renames(["a=b", " c = d "]) == {"a": "b", "c": "d"}
    for bad in ("ab", "=b", "a="):
        with pytest.raises(ConfigError):
            parse_renames([bad])


def test_unify_names_merges_many_to_one_and_keeps_first_spelling() -> None:
    assert unify_names([["a", "b", "a"], ["B", "c"]], case_insensitive=True) == (
        ["a", "b", "c"],
        [[0, 1, 0], [1, 2]],
    )
    assert unify_threats([["B"], ["c", "x"]], ["a", "b", "c"], case_insensitive=True) == ["b", "c"]


def test_dry_run_writes_nothing(overlapping, tmp_path: Path) -> None:
    result = merge_datasets(list(overlapping), tmp_path / "m", dry_run=True)
    assert result.dry_run and not (tmp_path / "m").exists()
    assert result.stats.n_images == 6 and result.sources[0].stats.n_images == 2
    assert {p.name for p in tmp_path.iterdir()} == {"a", "b"}


def test_failure_mid_merge_leaves_nothing(
    overlapping, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = merge_mod.place_file

    def flaky(src: Path, dest: Path, link: bool) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        real(src, dest, link)

    monkeypatch.setattr(merge_mod, "place_file", flaky)
    with pytest.raises(OSError, match="disk full"):
        merge_datasets(list(overlapping), tmp_path / "out")
    assert calls["n"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no OUT, no half-made temp folder


def test_bad_label_aborts_with_file_and_line(overlapping, tmp_path: Path) -> None:
    a, b = overlapping
    (b.parent / "labels" / "train" / "img2.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match=r"img2.txt:2"):
        merge_datasets([a, b], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    (tmp_path / "exists").mkdir()
    with pytest.raises(XrayDetError, match="already exists"):
        merge_datasets([a], tmp_path / "exists")


def test_label_that_is_not_utf8_aborts_with_file_and_line(overlapping, tmp_path: Path) -> None:
    a, b = overlapping
    label = b.parent / "labels" / "train" / "img2.txt"
    label.write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.2\n")  # a UTF-8 BOM is dropped, as Ultralytics does
    assert merge_datasets([a, b], tmp_path / "m", dry_run=True).stats.n_images == 6
    label.write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 caf\xe9\n")  # line 2 in Latin-1
    with pytest.raises(DatasetError) as err:
        merge_datasets([a, b], tmp_path / "m")
    assert (err.value.path, err.value.line) == (label, 2)
    assert str(err.value).startswith(f"{label}:2: not UTF-8 text: byte 0xe9 at offset 42 ")
    assert not (tmp_path / "m").exists()


def test_valid_split_maps_to_val(yolo_set, image_writer, tmp_path: Path) -> None:
    a = yolo_set("a", ["knife"], {"train": {"t": ["0 0.5 0.5 0.2 0.2"]}, "val": {"v": ["0 0.5 0.5 0.2 0.2"]}})
    folder = tmp_path / "roboflow"  # no data.yaml: an images/<split> tree with a 'valid' split, no labels
    image_writer(folder / "images" / "valid" / "n0.jpg", 5)
    image_writer(folder / "images" / "train" / "n1.jpg", 6)
    result = merge_datasets([a, folder], tmp_path / "m")
    assert result.sources[1].split_map == {"train": "train", "valid": "val"}
    merged = load_dataset(tmp_path / "m")
    assert sorted(p.name for p in merged.images("val")) == ["n0.jpg", "v.png"]
    assert result.stats.splits["val"].background == 1


def test_cli_merge(overlapping, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    a, b = overlapping
    args = [
        "data",
        "merge",
        str(a),
        str(b),
        "-o",
        str(tmp_path / "m"),
        "--rename",
        "pistol=Gun",
        "--case-insensitive",
    ]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert (
        "would write" in dry.stdout and "Knife, Gun, bottle" in dry.stdout and not (tmp_path / "m").exists()
    )
    real = CliRunner().invoke(app, [*args, "--json"])
    assert real.exit_code == 0, real.output
    assert json.loads(real.stdout)["names"] == ["Knife", "Gun", "bottle"]
    assert load_dataset(tmp_path / "m").names == ["Knife", "Gun", "bottle"]
    assert json.loads((tmp_path / "m" / "merge.json").read_text())["sources"][1]["id_map"] == [0, 1, 2]


def test_repeated_class_names_are_reported_by_check_and_refused_by_merge(yolo_set, tmp_path: Path) -> None:
    """Ultralytics trains a set whose names repeat, so it loads; but which 'knife' is which is ambiguous."""
    twice = yolo_set("twice", ["knife", "gun", "knife"], {"train": {"a": ["2 0.5 0.5 0.2 0.2"]}})
    assert load_dataset(twice).names == ["knife", "gun", "knife"]
    [found] = [p for p in check_dataset(twice).problems if p.code == "class-name-duplicate"]
    assert found.severity == "error" and "'knife' (ids 0, 2)" in found.message
    with pytest.raises(DatasetError, match=r"class names repeat: 'knife' \(ids 0, 2\)") as err:
        merge_datasets([twice], tmp_path / "merged")
    assert str(twice) in str(err.value)
    assert not (tmp_path / "merged").exists()


def test_remap_refuses_a_class_id_equal_to_the_number_of_classes() -> None:
    """Ids run 0..n-1: id n (here 2 of 2) is out of range and must name the file and line."""
    assert merge_mod.remap_label_text("1 0.5 0.5 0.1 0.2\n", [3, 0]).text == "0 0.5 0.5 0.1 0.2\n"
    with pytest.raises(DatasetError, match=r"x\.txt:2.*class id 2 but the source's names has 2 classes"):
        merge_mod.remap_label_text("0 0.5 0.5 0.1 0.2\n2 0.5 0.5 0.1 0.2\n", [3, 0], "x.txt")


def test_merge_refuses_a_label_with_class_id_equal_to_the_number_of_classes(
    overlapping, tmp_path: Path
) -> None:
    a, b = overlapping  # b has 3 classes
    (b.parent / "labels" / "train" / "img2.txt").write_text("0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match=r"img2\.txt:2"):
        merge_datasets([a, b], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_threats_spelt_in_another_case_than_names_are_kept(yolo_set, tmp_path: Path) -> None:
    """data.yaml's threats match names ignoring case (load_dataset accepts 'Knife' for 'knife'); merge looked
    the spelling up exactly and dropped the threat: the merged set had no threat class at all."""
    a = yolo_set("a", ["knife", "gun"], {"train": {"x": ["0 0.5 0.5 0.2 0.2"]}}, threats=["Knife"])
    b = yolo_set("b", ["bottle"], {"train": {"y": ["0 0.5 0.5 0.2 0.2"]}}, seed=1)
    result = merge_datasets([a, b], tmp_path / "m")
    assert result.threats == ["knife"]
    assert load_dataset(tmp_path / "m").threat_ids == {0}


def test_the_same_source_twice_is_refused(yolo_set, tmp_path: Path) -> None:
    """Given as a folder and as its data.yaml, a set was merged twice: every image duplicated, renamed."""
    a = yolo_set("a", ["knife"], {"train": {"x": ["0 0.5 0.5 0.2 0.2"]}})
    with pytest.raises(ConfigError, match=r"sources 1 and 2 are the same data set"):
        merge_datasets([a.parent, a], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_overwrite_never_replaces_a_source(overlapping, tmp_path: Path, file_sha1) -> None:
    """Merging A and B into A with ``--overwrite`` would delete A before its images could be read again."""
    a, b = overlapping
    before = {p: file_sha1(p) for p in a.parent.rglob("*") if p.is_file()}
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        merge_datasets([a, b], a.parent, overwrite=True)
    assert {p: file_sha1(p) for p in a.parent.rglob("*") if p.is_file()} == before


def _leaky_pair(yolo_set, image_writer, a_split: str, b_split: str) -> tuple[Path, Path, Path, Path]:
    """Two sources, each with its own images, plus one image whose bytes are in A's ``a_split`` (a.png) and
    B's ``b_split`` (b.png): the same scan exported twice under other names."""
    a = yolo_set(
        "A", ["knife"], {"train": {"a1": ["0 0.5 0.5 0.2 0.2"]}, "val": {"a2": ["0 0.5 0.5 0.2 0.2"]}}
    )
    b = yolo_set(
        "B", ["knife"], {"train": {"b1": ["0 0.5 0.5 0.2 0.2"]}, "val": {"b2": ["0 0.5 0.5 0.2 0.2"]}}, seed=1
    )
    a_copy, b_copy = a.parent / f"images/{a_split}/a.png", b.parent / f"images/{b_split}/b.png"
    image_writer(a_copy, 999)
    b_copy.write_bytes(a_copy.read_bytes())
    for image, root in ((a_copy, a.parent), (b_copy, b.parent)):
        (root / "labels" / image.parent.name / f"{image.stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return a, b, a_copy, b_copy


@pytest.mark.parametrize(("a_split", "b_split"), [("train", "val"), ("val", "train")])
def test_the_same_image_in_two_sources_is_warned_and_its_val_copy_dropped(
    yolo_set, image_writer, tmp_path: Path, caplog, file_sha1, a_split: str, b_split: str
) -> None:
    """A's train and B's val (or the other way round) held the same bytes: the merged set leaked."""
    a, b, a_copy, b_copy = _leaky_pair(yolo_set, image_writer, a_split, b_split)
    train_copy, val_copy = (a_copy, b_copy) if a_split == "train" else (b_copy, a_copy)
    with caplog.at_level("WARNING", logger="xraydet.data.merge"):
        result = merge_datasets([a, b], tmp_path / "m")
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(train_copy) in warning and str(val_copy) in warning and "dropped the val copy" in warning
    [dup] = result.duplicates
    assert (dup.kind, dup.kept, dup.kept_split, dup.duplicate, dup.duplicate_split, dup.dropped) == (
        "split-leak",
        str(train_copy),
        "train",
        str(val_copy),
        "val",
        True,
    )
    assert (result.leaks_dropped, result.leaks_kept, result.duplicates_in_split) == (1, 0, 0)
    assert sum(s.dropped_files for s in result.sources) == 1
    assert result.stats.splits["train"].images == 3 and result.stats.splits["val"].images == 2
    merged = load_dataset(tmp_path / "m")
    digest = file_sha1(train_copy)
    assert [file_sha1(p) for p in merged.images("train")].count(digest) == 1
    assert digest not in {file_sha1(p) for p in merged.images("val")}
    assert len(merged.images("val")) == 2
    assert not [p for p in check_dataset(tmp_path / "m").problems if p.code == "split-leak"]
    body = json.loads((tmp_path / "m" / "merge.json").read_text())
    assert body["leaks_dropped"] == 1 and body["duplicates"][0]["duplicate"] == str(val_copy)


def test_keep_leaks_keeps_both_copies_and_check_reports_the_copy_merge_named(
    yolo_set, image_writer, tmp_path: Path
) -> None:
    a, b, a_copy, b_copy = _leaky_pair(yolo_set, image_writer, "train", "val")
    result = merge_datasets([a, b], tmp_path / "m", keep_leaks=True)
    [dup] = result.duplicates
    assert (dup.kept, dup.duplicate, dup.dropped) == (str(a_copy), str(b_copy), False)
    assert (result.leaks_dropped, result.leaks_kept) == (0, 1)
    assert result.stats.splits["val"].images == 3
    [leak] = [p for p in check_dataset(tmp_path / "m").problems if p.code == "split-leak"]
    merged_copy = json.loads((tmp_path / "m" / "merge.json").read_text())["files"]
    source_of = {str(tmp_path / "m" / f["image"]): f["source"] for f in merged_copy}
    assert (leak.split, source_of[leak.file or ""]) == ("val", str(b_copy))


def test_the_same_image_twice_in_one_merged_split_is_kept_and_counted(
    yolo_set, image_writer, tmp_path: Path, caplog
) -> None:
    a, b, a_copy, b_copy = _leaky_pair(yolo_set, image_writer, "train", "train")
    with caplog.at_level("WARNING", logger="xraydet.data.merge"):
        result = merge_datasets([a, b], tmp_path / "m")
    assert (result.leaks_dropped, result.duplicates_in_split) == (0, 1)
    assert result.duplicates[0].kind == "duplicate-image" and not result.duplicates[0].dropped
    assert any(str(a_copy) in r.getMessage() and str(b_copy) in r.getMessage() for r in caplog.records)
    assert result.stats.splits["train"].images == 4
    codes = {p.code for p in check_dataset(tmp_path / "m").problems}
    assert "duplicate-image" in codes and "split-leak" not in codes


def test_cli_merge_reports_dropped_leaks(yolo_set, image_writer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    a, b, _, _ = _leaky_pair(yolo_set, image_writer, "train", "val")
    args = ["data", "merge", str(a), str(b), "-o", str(tmp_path / "m")]
    dropped = CliRunner().invoke(app, args)
    assert dropped.exit_code == 0, dropped.output
    assert "1 image(s) also in an earlier split" in dropped.stdout and "(5 images)" in dropped.stdout
    kept = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "k"), "--keep-leaks"])
    assert kept.exit_code == 0, kept.output
    assert "1 image(s) in two splits kept (--keep-leaks)" in kept.stdout and "(6 images)" in kept.stdout


def test_a_leak_whose_copies_carry_other_labels_says_the_boxes_are_lost(
    yolo_set, image_writer, tmp_path: Path, caplog
) -> None:
    """One scan labelled `knife` in A's train, `gun` + `knife` in B's val: dropping B's copy loses the gun."""
    a = yolo_set(
        "A", ["knife"], {"train": {"a1": ["0 0.5 0.5 0.2 0.2"]}, "val": {"a2": ["0 0.5 0.5 0.2 0.2"]}}
    )
    b = yolo_set(
        "B",
        ["gun", "knife"],
        {"train": {"b1": ["0 0.4 0.4 0.2 0.2"]}, "val": {"b2": ["1 0.5 0.5 0.2 0.2"]}},
        seed=1,
    )
    image_writer(a.parent / "images/train/x.png", 999)
    (b.parent / "images/val/x.png").write_bytes((a.parent / "images/train/x.png").read_bytes())
    (a.parent / "labels/train/x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (b.parent / "labels/val/x.txt").write_text("0 0.2 0.2 0.1 0.1\n1 0.5 0.5 0.2 0.2\n")
    with caplog.at_level("WARNING", logger="xraydet.data.merge"):
        result = merge_datasets([a, b], tmp_path / "m")
    [dup] = result.duplicates
    assert dup.dropped and dup.labels_differ
    assert any(
        "labels differ, so the dropped copy's boxes are lost" in r.getMessage() for r in caplog.records
    )
    assert json.loads((tmp_path / "m" / "merge.json").read_text())["duplicates"][0]["labels_differ"] is True


def test_the_same_boxes_in_another_order_do_not_differ(yolo_set, image_writer, tmp_path: Path) -> None:
    a, b, _, _ = _leaky_pair(yolo_set, image_writer, "train", "val")
    (a.parent / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\n")
    (b.parent / "labels/val/b.txt").write_text("0  0.1 0.1 0.1 0.1\n0 0.5 0.5 0.2 0.2\n")
    [dup] = merge_datasets([a, b], tmp_path / "m").duplicates
    assert dup.dropped and not dup.labels_differ


def test_a_merge_that_would_leave_val_empty_is_refused(yolo_set, tmp_path: Path) -> None:
    """Every val image is also a train image (train and val name one folder): dropping them empties val."""
    a = yolo_set("A", ["knife"], {"train": {"a1": ["0 0.5 0.5 0.2 0.2"], "a2": ["0 0.4 0.4 0.2 0.2"]}})
    body = yaml.safe_load(a.read_text())
    a.write_text(yaml.safe_dump({**body, "val": body["train"]}))
    with pytest.raises(ConfigError, match=r"every val image \(2\) is also in an earlier split.*--keep-leaks"):
        merge_datasets([a], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert merge_datasets([a], tmp_path / "m", keep_leaks=True).leaks_kept == 2


def test_a_dry_run_refuses_an_output_over_its_inputs_as_the_real_merge_does(
    overlapping, tmp_path: Path
) -> None:
    a, b = overlapping
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        merge_datasets([a, b], a.parent, overwrite=True, dry_run=True)
