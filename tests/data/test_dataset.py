"""data.yaml path semantics: xraydet and Ultralytics must read the same folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ultralytics.data.utils import check_det_dataset

from xraydet.data.dataset import DatasetError, load_dataset, ultralytics_yaml


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
