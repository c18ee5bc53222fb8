"""``xraydet data split``: stratified, seeded, deterministic, complete, atomic."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

from xraydet.data.check import check_dataset
from xraydet.data.dataset import DatasetError, label_path_for, load_dataset
from xraydet.data.split import apportion, assign_splits, split_dataset, stratum_keys
from xraydet.errors import ConfigError, XrayDetError

# 50 images pooled from two splits: 38 whose rarest class is 0, 8 with class 1 (rarer), 4 background.
# "a0" exists in both source splits with different pixels: a name collision the split must survive.
SPLITS = {
    "train": {f"a{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(30)}
    | {f"m{i}": ["0 0.3 0.3 0.2 0.2", "1 0.7 0.7 0.2 0.2"] for i in range(6)}
    | {f"bg{i}": None for i in range(4)},
    "val": {f"v{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(7)}
    | {"a0": ["0 0.4 0.4 0.2 0.2"]}
    | {f"r{i}": ["1 0.5 0.5 0.2 0.2"] for i in range(2)},
}


@pytest.fixture
def source(yolo_set) -> Path:
    return yolo_set("src", ["knife", "gun"], SPLITS, threats=["knife", "gun"])


def _stratum_of(name: str) -> str:
    return "gun" if name[0] in "mr" else ("bg" if name.startswith("bg") else "knife")


def _by_content(root: Path, file_sha1) -> dict[str, tuple[str, str | None]]:
    """sha1 of each image -> (split, label text or None)."""
    ds = load_dataset(root)
    out = {}
    for split in ds.splits:
        for image in ds.images(split):
            label = label_path_for(image)
            out[file_sha1(image)] = (split, label.read_text() if label.exists() else None)
    return out


def test_split_is_complete_stratified_and_labels_follow_images(
    source: Path, tmp_path: Path, file_sha1
) -> None:
    result = split_dataset(source, tmp_path / "out", val=0.2, seed=0)
    assert result.counts == {"train": 40, "val": 10}
    before, after = _by_content(source.parent, file_sha1), _by_content(tmp_path / "out", file_sha1)
    assert set(before) == set(after) and len(after) == 50  # every image exactly once
    assert all(before[h][1] == after[h][1] for h in before)  # its own label, byte for byte
    names = {file_sha1(p): p.stem for p in (source.parent / "images").rglob("*.png")}
    val = Counter(_stratum_of(names[h]) for h, (split, _) in after.items() if split == "val")
    sizes = {"knife": 38, "gun": 8, "bg": 4}
    for stratum, n in sizes.items():  # each stratum gets its share of val, rounded down or up
        assert math.floor(n * 0.2) <= val[stratum] <= math.ceil(n * 0.2), val
    out = load_dataset(tmp_path / "out")
    assert out.names == ["knife", "gun"] and out.threats == ["knife", "gun"]
    assert result.stats.splits["val"].images == 10


def test_split_is_deterministic_per_seed(source: Path, tmp_path: Path) -> None:
    def assignment(out: Path) -> dict[str, str]:
        return {f["source"]: f["split"] for f in json.loads((out / "split.json").read_text())["files"]}

    split_dataset(source, tmp_path / "s0", val=0.2, test=0.1, seed=0)
    split_dataset(source, tmp_path / "s0b", val=0.2, test=0.1, seed=0)
    result = split_dataset(source, tmp_path / "s1", val=0.2, test=0.1, seed=1)
    assert assignment(tmp_path / "s0") == assignment(tmp_path / "s0b")
    assert assignment(tmp_path / "s0") != assignment(tmp_path / "s1")
    assert result.counts == {"train": 35, "val": 10, "test": 5}
    assert "test" in load_dataset(tmp_path / "s1").splits


def test_link_mode_links_images(source: Path, tmp_path: Path) -> None:
    split_dataset(source, tmp_path / "linked", val=0.2, link=True)
    for f in json.loads((tmp_path / "linked" / "split.json").read_text())["files"]:
        dest, src = tmp_path / "linked" / f["image"], Path(f["source"])
        assert dest.is_symlink() or os.stat(dest).st_ino == os.stat(src).st_ino


def test_refuses_bad_input_and_writes_nothing(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        split_dataset(source, tmp_path / "x", val=0.7, test=0.4)
    (tmp_path / "exists").mkdir()
    with pytest.raises(XrayDetError, match="already exists"):
        split_dataset(source, tmp_path / "exists")
    (source.parent / "labels" / "train" / "a3.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 zero 0.2 0.2\n")
    with pytest.raises(DatasetError, match=r"a3.txt:2"):
        split_dataset(source, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize(
    ("sizes", "target", "expected"),
    [
        ({"a": 10, "b": 5, "c": 5}, 4, {"a": 2, "b": 1, "c": 1}),
        ({"a": 38, "b": 8, "c": 4}, 10, {"a": 8, "b": 1, "c": 1}),
        ({"a": 1, "b": 1}, 5, {"a": 1, "b": 1}),
        ({"a": 3}, 0, {"a": 0}),
        ({}, 3, {}),
    ],
)
def test_apportion(sizes: dict, target: int, expected: dict) -> None:
    assert apportion(sizes, target) == expected


def test_stratum_is_the_rarest_class() -> None:
    # images per class: 0 in three, 1 in two, 2 in one; each image goes to its rarest class
    assert stratum_keys([{0}, {0, 2}, {0, 1}, {1}, set()]) == [0, 2, 1, 1, -1]


def test_rare_class_reaches_val_even_when_always_with_a_common_one() -> None:
    class_sets = [{0}] * 90 + [{0, 1}] * 10
    splits = assign_splits(class_sets, val=0.2, seed=3)
    assert splits.count("val") == 20 and splits[90:].count("val") == 2


def test_cli_split(source: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    result = CliRunner().invoke(
        app, ["data", "split", str(source), "-o", str(tmp_path / "o"), "--val", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert "train 40, val 10" in result.stdout and (tmp_path / "o" / "data.yaml").is_file()


def test_refuses_a_split_without_val_images(source: Path, tmp_path: Path) -> None:
    # --val 0 used to write a data.yaml whose val is an empty folder, which `data check` then rejects
    with pytest.raises(ConfigError, match=r"--val 0.0: must be above 0"):
        split_dataset(source, tmp_path / "v0", val=0.0)
    with pytest.raises(ConfigError, match=r"--val 0.005: gives no val image out of 50"):
        split_dataset(source, tmp_path / "tiny", val=0.005)
    with pytest.raises(ConfigError, match=r"--test 0.005: gives no test image"):
        split_dataset(source, tmp_path / "tiny-test", val=0.2, test=0.005)
    assert not (tmp_path / "v0").exists() and not (tmp_path / "tiny").exists()


def test_an_image_listed_by_two_splits_is_placed_once(yolo_set, tmp_path: Path) -> None:
    """A data.yaml whose train and val name the same folder (common in small sets) pools each image once:
    otherwise one copy can land in train and the other in val, the leak the split exists to prevent."""
    data_yaml = yolo_set("same", ["knife"], {"train": {f"a{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(20)}})
    data_yaml.write_text("train: images/train\nval: images/train\nnames: [knife]\n")
    result = split_dataset(data_yaml, tmp_path / "out", val=0.2, seed=0)
    assert result.counts == {"train": 16, "val": 4}
    manifest = json.loads((tmp_path / "out" / "split.json").read_text())["files"]
    sources = [f["source"] for f in manifest]
    assert len(sources) == len(set(sources)) == 20


def test_refuses_a_split_without_train_images(yolo_set, tmp_path: Path) -> None:
    """--val and --test that take every image used to write an empty train folder (nothing to train on)."""
    data_yaml = yolo_set(
        "two", ["knife"], {"train": {"a": ["0 0.5 0.5 0.2 0.2"], "b": ["0 0.4 0.4 0.2 0.2"]}}
    )
    with pytest.raises(ConfigError, match=r"--val 0.5 and --test 0.45: leave no train image out of 2"):
        split_dataset(data_yaml, tmp_path / "out", val=0.5, test=0.45)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["the-set", "parent"], ids=["out-is-the-source", "out-holds-the-source"])
def test_overwrite_never_replaces_the_source(source: Path, where: str, file_sha1) -> None:
    """``--overwrite`` replaces the output folder whole: at the source (or above it) it would delete it."""
    root = source.parent
    before = {p: file_sha1(p) for p in root.rglob("*") if p.is_file()}
    out = root if where == "the-set" else root.parent
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        split_dataset(source, out, val=0.2, seed=0, overwrite=True)
    assert {p: file_sha1(p) for p in root.rglob("*") if p.is_file()} == before


def _copy_image(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes())


@pytest.mark.parametrize("seed", range(6))
def test_identical_images_at_different_paths_stay_in_one_split(
    yolo_set, tmp_path: Path, file_sha1, seed: int
) -> None:
    """Byte-identical images under other names (here 6 copies of t0, 3 of t1 across train and val) were
    grouped by path: copies landed in train and val, the leak `data check` reports as split-leak."""
    data_yaml = yolo_set(
        "dups",
        ["knife", "gun"],
        {
            "train": {f"t{i}": [f"{i % 2} 0.5 0.5 0.2 0.2"] for i in range(20)},
            "val": {f"v{i}": ["0 0.4 0.4 0.2 0.2"] for i in range(5)},
        },
    )
    root = data_yaml.parent
    for i in range(3):
        _copy_image(root / "images/train/t0.png", root / f"images/train/copy_t0_{i}.png")
        _copy_image(root / "images/train/t0.png", root / f"images/val/val_t0_{i}.png")
    for i in range(3):
        _copy_image(root / "images/train/t1.png", root / f"images/val/val_t1_{i}.png")
    out = tmp_path / f"out{seed}"
    result = split_dataset(data_yaml, out, val=0.2, seed=seed)
    splits_of: dict[str, set[str]] = {}
    for split, digests in _digests_by_split(out, file_sha1).items():
        for digest in digests:
            splits_of.setdefault(digest, set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values()), splits_of
    assert (result.duplicate_groups, result.duplicate_images) == (2, 11)
    assert sum(result.counts.values()) == 34  # every copy is written, next to its twins
    assert sum(split == {"val"} for split in splits_of.values()) == 5  # round(25 distinct * 0.2)
    body = json.loads((out / "split.json").read_text())
    assert (body["duplicate_groups"], body["duplicate_images"]) == (2, 11)
    assert not [p for p in check_dataset(out).problems if p.code == "split-leak"]


def _digests_by_split(root: Path, file_sha1) -> dict[str, list[str]]:
    """split -> sha1 of each of its images."""
    ds = load_dataset(root)
    return {split: [file_sha1(p) for p in ds.images(split)] for split in ds.splits}


def test_cli_split_says_how_many_duplicate_groups_were_kept_together(yolo_set, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    data_yaml = yolo_set("d", ["knife"], {"train": {f"a{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(10)}})
    _copy_image(data_yaml.parent / "images/train/a0.png", data_yaml.parent / "images/train/b0.png")
    result = CliRunner().invoke(app, ["data", "split", str(data_yaml), "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "kept 1 group(s) of identical images (2 images) together" in result.stdout


@pytest.mark.parametrize("bad", ["2 0.5 0.5 0.2 0.2", "7 0.1 0.1 0.2 0.1 0.2 0.3"], ids=["box", "polygon"])
def test_split_refuses_class_ids_outside_names_naming_file_and_line(
    source: Path, tmp_path: Path, bad: str
) -> None:
    """Such labels were copied unchanged (Ultralytics then drops the image) and left out of the counts."""
    label = source.parent / "labels" / "train" / "a3.txt"
    label.write_text(f"0 0.5 0.5 0.2 0.2\n\n{bad}\n")
    cls = bad.split()[0]
    with pytest.raises(DatasetError, match=rf"a3\.txt:3: class id {cls} but names has 2 classes \(0\.\.1\)"):
        split_dataset(source, tmp_path / "out", val=0.2)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    [found] = [p for p in check_dataset(source).problems if p.code == "class-out-of-range"]
    assert (Path(found.file or ""), found.line) == (label, 3)  # what `data check` names too


def test_overwrite_never_replaces_the_folder_of_the_data_yaml(source: Path, tmp_path: Path) -> None:
    """A data.yaml kept apart from its images (``path:`` elsewhere) is an input too."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    body = yaml.safe_load(source.read_text())
    (cfg / "data.yaml").write_text(yaml.safe_dump({**body, "path": str(source.parent)}))
    (cfg / "notes.txt").write_text("mine")
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        split_dataset(cfg / "data.yaml", cfg, val=0.2, seed=0, overwrite=True)
    assert (cfg / "notes.txt").read_text() == "mine"


def test_overwrite_never_replaces_the_folder_an_image_list_names(source: Path, tmp_path: Path) -> None:
    """``train: list.txt`` may name images anywhere: their folder is an input too."""
    images = sorted((source.parent / "images" / "train").glob("*.png"))
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "train.txt").write_text("".join(f"{p}\n" for p in images[:20]))
    (listed / "val.txt").write_text("".join(f"{p}\n" for p in images[20:]))
    body = yaml.safe_load(source.read_text())
    (listed / "data.yaml").write_text(yaml.safe_dump({**body, "train": "train.txt", "val": "val.txt"}))
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        split_dataset(listed / "data.yaml", source.parent / "images", val=0.2, seed=0, overwrite=True)
    assert all(p.is_file() for p in images)


def test_a_split_tipped_by_a_large_group_of_identical_images_says_so(
    yolo_set, tmp_path: Path, caplog
) -> None:
    """25 distinct images, one of them 8 times: sizes count groups, so when that group lands in val, val
    holds far more than the 20% asked. Each seed's split warns exactly when its val share is off by > 5%."""
    data_yaml = yolo_set(
        "big-group", ["knife"], {"train": {f"t{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(25)}}
    )
    root = data_yaml.parent
    for i in range(7):
        _copy_image(root / "images/train/t0.png", root / f"images/train/t0_copy{i}.png")
    tipped = 0
    for seed in range(40):
        caplog.clear()
        with caplog.at_level("WARNING", logger="xraydet.data.split"):
            result = split_dataset(data_yaml, tmp_path / f"out{seed}", val=0.2, seed=seed)
        share = result.counts["val"] / sum(result.counts.values())
        warned = [r.getMessage() for r in caplog.records if "not the 20% asked" in r.getMessage()]
        assert bool(warned) == (abs(share - 0.2) > 0.05), (seed, result.counts, warned)
        tipped += bool(warned)
    assert tipped  # some seed put the group of 8 into val
