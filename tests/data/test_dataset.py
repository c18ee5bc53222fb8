"""data.yaml path semantics: xraydet and Ultralytics must read the same folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ultralytics.data.utils import check_det_dataset

from xraydet.data.dataset import (
    DatasetError,
    load_dataset,
    parse_label_line,
    read_label_file,
    ultralytics_yaml,
)
from xraydet.data.split import split_dataset


def make_set(root: Path, yaml_text: str) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / split / "a.jpg")
        (root / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml_text)
    return root / "data.yaml"


def test_relative_path_key_resolves_against_the_yaml_for_both_tools(tmp_path: Path) -> None:
    data = make_set(tmp_path / "set", "path: .\ntrain: images/train\nval: images/val\nnames: [knife]\n")
    ds = load_dataset(data)
    assert ds.root == (tmp_path / "set").resolve()
    fixed = ultralytics_yaml(ds, tmp_path / "cache")
    assert fixed != data.resolve() and fixed.parent == tmp_path / "cache"
    assert ultralytics_yaml(ds, tmp_path / "cache") == fixed  # same content, same file
    read_by_ultralytics = check_det_dataset(str(fixed))
    assert Path(read_by_ultralytics["train"]) == ds.splits["train"][0].resolve()
    assert data.read_text().startswith("path: .")  # the user's file is never rewritten


def test_yaml_without_path_key_is_used_as_it_is(tmp_path: Path) -> None:
    data = make_set(tmp_path / "set", "train: images/train\nval: images/val\nnames: {0: knife}\n")
    ds = load_dataset(data)
    assert ultralytics_yaml(ds, tmp_path / "cache") == data.resolve()
    assert not (tmp_path / "cache").exists()
    assert Path(check_det_dataset(str(data))["train"]) == ds.splits["train"][0].resolve()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("train: images/train\nnames: {0: a, 2: b}\n", "without gaps"),
        ("train: images/train\nnc: 3\nnames: [a, b]\n", "nc is 3 but names lists 2"),
        ("train: images/train\nnames: [a]\nthreats: [gun]\n", "threats lists classes not in names"),
        ("names: [a\n", "not valid YAML"),
    ],
)
def test_bad_data_yaml_names_the_file_and_the_fault(tmp_path: Path, yaml_text: str, message: str) -> None:
    data = make_set(tmp_path / "set", yaml_text)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(data)
    assert str(data) in str(err.value)


def test_non_utf8_data_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    data = make_set(tmp_path / "set", "train: images/train\n")
    data.write_bytes(b"train: images/train\nnames: [caf\xe9]\n")  # Latin-1, not UTF-8
    with pytest.raises(DatasetError, match="not UTF-8") as err:
        load_dataset(data)
    assert f"{data}:2:" in str(err.value)


@pytest.mark.parametrize("kind", ["folder", "broken link"])
def test_a_data_yaml_that_is_not_a_file_is_named(tmp_path: Path, kind: str) -> None:
    """A folder named data.yaml made the set read as a bare image folder: `data check` said "val has no
    images" instead of naming DIR/data.yaml."""
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    root = tmp_path / "set"
    make_set(root, "").unlink()
    if kind == "folder":
        (root / "data.yaml").mkdir()
        match = r"data\.yaml: is a folder, not a YAML file"
    else:
        (root / "data.yaml").symlink_to(tmp_path / "gone.yaml")
        match = rf"data\.yaml: is a link to {tmp_path}/gone\.yaml, which does not exist"
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(root)
    assert err.value.path == root / "data.yaml"
    result = CliRunner().invoke(app, ["data", "check", str(root)])
    assert isinstance(result.exception, DatasetError), result.output
    assert str(result.exception).startswith(f"{root / 'data.yaml'}: is a")


@pytest.mark.parametrize(
    "text", ["0 nan 0.5 0.2 0.2", "0 0.5 inf 0.2 0.2", "nan 0.5 0.5 0.2 0.2", "0 0.1 0.1 0.3 0.1 0.3 -inf"]
)
def test_non_finite_label_values_are_refused_with_file_and_line(tmp_path: Path, text: str) -> None:
    with pytest.raises(DatasetError, match=r"a\.txt:3: non-finite"):
        parse_label_line(text, "a.txt", 3)
    data = make_set(tmp_path / "set", "train: images/train\nval: images/val\nnames: [knife]\n")
    label = tmp_path / "set" / "labels" / "val" / "a.txt"
    label.write_text(f"0 0.5 0.5 0.2 0.2\n{text}\n")
    with pytest.raises(DatasetError, match=f"{label}:2: non-finite"):
        load_dataset(data).labels(tmp_path / "set" / "images" / "val" / "a.jpg", 32, 32)


def test_non_utf8_label_file_is_a_dataset_error_naming_the_line(tmp_path: Path) -> None:
    data = make_set(tmp_path / "set", "train: images/train\nval: images/val\nnames: [knife]\n")
    label = tmp_path / "set" / "labels" / "train" / "a.txt"
    label.write_bytes(b"0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2 \xff\n")
    with pytest.raises(DatasetError, match=f"{label}:2: not UTF-8"):
        read_label_file(label)
    with pytest.raises(DatasetError, match=f"{label}:2: not UTF-8"):  # split reads every label file
        split_dataset(data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hidden_files_and_folders_are_not_images(tmp_path: Path) -> None:
    """Ultralytics' recursive glob skips names starting with '.'; so must the image listing."""
    data = make_set(tmp_path / "set", "train: images/train\nval: images/val\nnames: [knife]\n")
    train = tmp_path / "set" / "images" / "train"
    (train / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")  # macOS metadata
    (tmp_path / "set" / "labels" / "train" / "._a.txt").write_bytes(b"\x00\x05\x16\x07")
    (train / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(train / ".ipynb_checkpoints" / "b-checkpoint.jpg")
    (train / "sub").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(train / "sub" / "c.jpg")
    assert load_dataset(data).images("train") == [train / "a.jpg", train / "sub" / "c.jpg"]
    # a data set kept under a hidden folder still works: only components below the split root count
    hidden_root = tmp_path / ".cache" / "set"
    data2 = make_set(hidden_root, "train: images/train\nval: images/val\nnames: [knife]\n")
    assert load_dataset(data2).images("train") == [hidden_root / "images" / "train" / "a.jpg"]
