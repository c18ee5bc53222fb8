"""Each command that writes a new set walks each input folder once: the listing that the output-over-input
check needs is the one the work uses (``split`` and ``merge`` used to walk every input twice)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from xraydet.data.convert import convert
from xraydet.data.dataset import load_dataset
from xraydet.data.merge import merge_datasets
from xraydet.data.split import split_dataset
from xraydet.errors import XrayDetError

BOX = ["0 0.5 0.5 0.2 0.2"]


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """Counts ``Path.rglob`` calls (the walk that lists a folder's images) by the folder walked."""
    counts: Counter[Path] = Counter()
    real = Path.rglob

    def counted(self: Path, pattern: str) -> Iterator[Path]:
        counts[self.resolve()] += 1
        return real(self, pattern)

    monkeypatch.setattr(Path, "rglob", counted)
    return counts


def _two_split_set(yolo_set: Callable[..., Path], name: str, seed: int = 0) -> Path:
    splits = {"train": {f"t{i}": BOX for i in range(8)}, "val": {f"v{i}": BOX for i in range(2)}}
    return yolo_set(name, ["knife"], splits, seed=seed)


def _folders(data_yaml: Path, *splits: str) -> dict[Path, int]:
    return {(data_yaml.parent / "images" / s).resolve(): 1 for s in splits}


def test_split_walks_each_source_folder_once(yolo_set, tmp_path: Path, walks: Counter[Path]) -> None:
    data_yaml = _two_split_set(yolo_set, "src")
    result = split_dataset(data_yaml, tmp_path / "out", val=0.2, seed=0)
    assert sum(result.counts.values()) == 10
    assert dict(walks) == _folders(data_yaml, "train", "val")


def test_split_walks_a_folder_two_splits_name_once(yolo_set, tmp_path: Path, walks: Counter[Path]) -> None:
    data_yaml = yolo_set("src", ["knife"], {"train": {f"t{i}": BOX for i in range(10)}})
    body = yaml.safe_load(data_yaml.read_text())
    data_yaml.write_text(yaml.safe_dump({**body, "val": body["train"]}))
    result = split_dataset(data_yaml, tmp_path / "out", val=0.2, seed=0)
    assert sum(result.counts.values()) == 10  # each image pooled once, as before
    assert dict(walks) == _folders(data_yaml, "train")


def test_split_refusing_its_output_walks_the_source_once(yolo_set, walks: Counter[Path]) -> None:
    data_yaml = _two_split_set(yolo_set, "src")
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        split_dataset(data_yaml, data_yaml.parent, val=0.2, seed=0, overwrite=True)
    assert dict(walks) == _folders(data_yaml, "train", "val")


@pytest.mark.parametrize("dry_run", [False, True], ids=["merge", "dry-run"])
def test_merge_walks_each_source_folder_once(
    yolo_set, tmp_path: Path, walks: Counter[Path], dry_run: bool
) -> None:
    a, b = _two_split_set(yolo_set, "A", seed=1), _two_split_set(yolo_set, "B", seed=2)
    result = merge_datasets([a, b], tmp_path / "m", dry_run=dry_run)
    assert result.stats.n_images == 20
    assert dict(walks) == _folders(a, "train", "val") | _folders(b, "train", "val")


def test_convert_walks_its_annotation_folder_once(tmp_path: Path, image_writer, walks: Counter[Path]) -> None:
    """convert already did: its output check needs no listing (it checks the folders the work read from)."""
    src = tmp_path / "export"
    image_writer(src / "scan.png", 1)
    row = {"image": "scan.png", "suffix": "<loc0000><loc0000><loc0512><loc0512> knife"}
    (src / "_annotations.train.jsonl").write_text(json.dumps(row) + "\n")
    convert(src, "loctoken", tmp_path / "yolo")
    assert dict(walks) == {src.resolve(): 1}


def test_listing_gives_what_images_and_locations_give(yolo_set, tmp_path: Path) -> None:
    """The one listing a command now uses is the same as the two it used to make."""
    data_yaml = _two_split_set(yolo_set, "src")
    listed = tmp_path / "listed"
    listed.mkdir()
    images = sorted((data_yaml.parent / "images" / "train").glob("*.png"))
    (listed / "train.txt").write_text("".join(f"{p}\n" for p in images[:5]))
    body = yaml.safe_load(data_yaml.read_text())
    val = str(data_yaml.parent / "images" / "val")
    (listed / "data.yaml").write_text(yaml.safe_dump({**body, "train": "train.txt", "val": val}))
    ds = load_dataset(listed / "data.yaml")
    listing = ds.listing()
    assert listing.images == {s: ds.images(s) for s in ds.splits}
    folders = sorted({image.parent for s in ds.splits for image in ds.images(s)})
    expected = [ds.root, ds.yaml_path, *ds.splits["train"], *ds.splits["val"], *folders]
    assert listing.locations == ds.locations() == expected
    assert len(listing.images["train"]) == 5 and len(listing.images["val"]) == 2
