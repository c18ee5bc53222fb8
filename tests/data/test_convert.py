"""``convert``: hand-made COCO / VOC / loc-token exports with known boxes -> YOLO data sets."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from xraydet.data.check import check_dataset
from xraydet.data.convert import convert, infer_split
from xraydet.data.dataset import load_dataset, read_label_file
from xraydet.data.formats import FormatError, Record, coco
from xraydet.errors import XrayDetError
from xraydet.structures import xywhn_to_xyxy


def _image(path: Path, w: int, h: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (200, 120, 40)).save(path)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -------------------------------------------------------------------------------------------- loc tokens
def test_loctoken_jsonl_to_known_yolo_lines(tmp_path: Path) -> None:
    """1024x512 scan, knife at x 100..300 / y 50..450 px and gun at x 512..768 / y 0..256 px."""
    src = tmp_path / "export"
    _image(src / "scan.jpg", 1024, 512)
    _image(src / "empty.jpg", 1024, 512)
    answer = "<loc0100><loc0100><loc0900><loc0300> knife ; <loc0000><loc0512><loc0512><loc0768> gun"
    _jsonl(
        src / "_annotations.train.jsonl",
        [
            {"image": "scan.jpg", "prefix": "detect knife ; gun", "suffix": answer},
            {"image": "empty.jpg", "prefix": "detect knife ; gun", "suffix": ""},
        ],
    )
    result = convert(src, "loctoken", tmp_path / "yolo")
    assert result.names == ["gun", "knife"]  # no declared order: sorted by name, and said so
    assert result.mapping == ["'gun' -> class 0", "'knife' -> class 1"]
    labels = (tmp_path / "yolo/labels/train/scan.txt").read_text().splitlines()
    assert labels == ["1 0.195312 0.488281 0.195312 0.781250", "0 0.625000 0.250000 0.250000 0.500000"]
    assert (tmp_path / "yolo/labels/train/empty.txt").read_text() == ""
    written = yaml.safe_load((tmp_path / "yolo/data.yaml").read_text())
    assert written["names"] == {0: "gun", 1: "knife"}
    assert json.loads((tmp_path / "yolo/conversion.json").read_text())["names"] == ["gun", "knife"]


def test_classes_option_fixes_the_order(tmp_path: Path) -> None:
    src = tmp_path / "export"
    _image(src / "scan.jpg", 1024, 512)
    _jsonl(
        src / "train.jsonl", [{"image": "scan.jpg", "suffix": "<loc0100><loc0100><loc0900><loc0300> knife"}]
    )
    result = convert(
        src, "loctoken", tmp_path / "yolo", classes=["scissors", "knife", "gun"], threats=["knife"]
    )
    assert result.names == ["scissors", "knife", "gun"]
    assert (tmp_path / "yolo/labels/train/scan.txt").read_text().split()[0] == "1"
    assert load_dataset(tmp_path / "yolo").threats == ["knife"]


def test_unknown_class_names_the_line_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "export"
    _image(src / "a.jpg", 64, 64)
    _jsonl(
        src / "train.jsonl",
        [
            {"image": "a.jpg", "suffix": "<loc0100><loc0100><loc0900><loc0300> knife"},
            {"image": "a.jpg", "suffix": "<loc0100><loc0100><loc0900><loc0300> Knife"},
        ],
    )
    with pytest.raises(FormatError, match=r"train\.jsonl:2: class 'Knife' is not in .*did you mean 'knife'"):
        convert(src, "loctoken", tmp_path / "yolo", classes=["knife", "gun"])
    assert not (tmp_path / "yolo").exists()


def test_openai_chat_jsonl_with_embedded_image(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 20, 30)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    row = {
        "messages": [
            {"role": "system", "content": "You find threats."},
            {"role": "user", "content": "detect gun"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]},
            {"role": "assistant", "content": "<loc0256><loc0512><loc0768><loc1000> gun"},
        ]
    }
    src = _jsonl(tmp_path / "valid.jsonl", [row])
    result = convert(src, "loctoken", tmp_path / "yolo")
    assert list(result.splits) == ["val"]
    image = tmp_path / "yolo/images/val/image_000001.png"
    assert Image.open(image).size == (200, 100)
    rows = read_label_file(tmp_path / "yolo/labels/val/image_000001.txt")
    np.testing.assert_allclose(
        xywhn_to_xyxy(rows[:, 1:], 200, 100), [[100, 25, 1000 / 1024 * 200, 75]], atol=1e-3
    )


def test_missing_image_is_an_error_naming_the_line(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", [{"image": "https://example.com/x/nowhere.jpg", "suffix": ""}])
    with pytest.raises(FormatError, match=r"a\.jsonl:1: image 'nowhere\.jpg' not found"):
        convert(src, "loctoken", tmp_path / "yolo")


def test_images_folder_option(tmp_path: Path) -> None:
    _image(tmp_path / "pics/x.jpg", 100, 100)
    src = _jsonl(
        tmp_path / "ann/a.jsonl",
        [{"image": "https://host/x.jpg", "suffix": "<loc0000><loc0000><loc0512><loc0512> gun"}],
    )
    convert(src, "loctoken", tmp_path / "yolo", images=tmp_path / "pics")
    assert (tmp_path / "yolo/labels/train/x.txt").read_text() == "0 0.250000 0.250000 0.500000 0.500000\n"


@pytest.mark.parametrize("target", ["ann", "pics", "."], ids=["annotations", "images", "above-both"])
def test_overwrite_never_replaces_the_input(tmp_path: Path, target: str) -> None:
    """The output folder is replaced whole: the annotations' or images' folder (or one above) is refused."""
    _image(tmp_path / "pics/x.jpg", 100, 100)
    src = _jsonl(
        tmp_path / "ann/a.jsonl", [{"image": "x.jpg", "suffix": "<loc0000><loc0000><loc0512><loc0512> gun"}]
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        convert(tmp_path / "ann", "loctoken", tmp_path / target, images=tmp_path / "pics", overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert src.is_file()


def test_an_image_over_the_pixel_limit_is_an_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    """PIL refuses to open an image past twice its pixel limit with an error that is not an OSError."""
    _image(tmp_path / "big.jpg", 200, 200)
    src = _jsonl(
        tmp_path / "a.jsonl", [{"image": "big.jpg", "suffix": "<loc0000><loc0000><loc0512><loc0512> gun"}]
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 pixels: over twice the limit
    with pytest.raises(FormatError, match=r"a\.jsonl:1: cannot open image 'big\.jpg'.*decompression bomb"):
        convert(src, "loctoken", tmp_path / "yolo")
    assert not (tmp_path / "yolo").exists()


# ------------------------------------------------------------------------------------------------- COCO
def _roboflow_export(root: Path) -> None:
    """train/ and valid/ folders, each with _annotations.coco.json and its images (Roboflow's layout)."""
    for split, offset in (("train", 0), ("valid", 5)):
        _image(root / split / f"bag{offset}.jpg", 640, 480)
        (root / split / "_annotations.coco.json").write_text(
            json.dumps(
                {
                    "images": [{"id": 0, "file_name": f"bag{offset}.jpg", "width": 640, "height": 480}],
                    "annotations": [
                        {"id": 0, "image_id": 0, "category_id": 2, "bbox": [64, 48, 128, 96]},
                        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [320, 240, 64, 48]},
                    ],
                    "categories": [
                        {"id": 0, "name": "threats", "supercategory": "none"},
                        {"id": 1, "name": "knife", "supercategory": "threats"},
                        {"id": 2, "name": "gun", "supercategory": "threats"},
                    ],
                }
            )
        )


def test_roboflow_coco_folder(tmp_path: Path) -> None:
    _roboflow_export(tmp_path / "rf")
    result = convert(tmp_path / "rf", "coco", tmp_path / "yolo")
    assert sorted(result.splits) == ["train", "val"]
    assert result.names == ["knife", "gun"]
    assert result.mapping == ["COCO category 1 'knife' -> class 0", "COCO category 2 'gun' -> class 1"]
    assert any("dropped COCO category 0 'threats'" in n for n in result.notes)
    lines = (tmp_path / "yolo/labels/val/bag5.txt").read_text().splitlines()
    assert lines == ["1 0.200000 0.200000 0.200000 0.200000", "0 0.550000 0.550000 0.100000 0.100000"]
    ds = load_dataset(tmp_path / "yolo")
    assert ds.names == ["knife", "gun"] and len(ds.images("train")) == 1


def test_single_file_split_comes_from_its_folder(tmp_path: Path) -> None:
    """``valid/_annotations.coco.json`` given on its own is val (the docs: words in the file's path)."""
    _roboflow_export(tmp_path / "rf")
    result = convert(tmp_path / "rf" / "valid" / "_annotations.coco.json", "coco", tmp_path / "yolo")
    assert list(result.splits) == ["val"]
    assert (tmp_path / "yolo/labels/val/bag5.txt").is_file()


def test_split_option_must_be_train_val_or_test(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app
    from xraydet.errors import ConfigError

    _roboflow_export(tmp_path / "rf")
    with pytest.raises(FormatError, match="split 'holdout' is not one of train, val, test"):
        convert(tmp_path / "rf", "coco", tmp_path / "yolo", split="holdout")
    assert not (tmp_path / "yolo").exists()
    args = ["data", "convert", str(tmp_path / "rf"), "--from", "coco", "-o", str(tmp_path / "y")]
    bad = CliRunner().invoke(app, [*args, "--split", "holdout"])
    assert isinstance(bad.exception, ConfigError) and "--split holdout" in str(bad.exception)
    assert not (tmp_path / "y").exists()
    good = CliRunner().invoke(app, [*args, "--split", "test"])
    assert good.exit_code == 0, good.output
    assert load_dataset(tmp_path / "y").splits.keys() == {"test"}


def test_coco_size_mismatch_is_an_error(tmp_path: Path) -> None:
    _roboflow_export(tmp_path / "rf")
    _image(tmp_path / "rf/train/bag0.jpg", 320, 240)  # the annotations say 640x480
    with pytest.raises(FormatError, match=r"annotations are for a 640x480 image but 'bag0\.jpg' is 320x240"):
        convert(tmp_path / "rf", "coco", tmp_path / "yolo")
    assert not (tmp_path / "yolo").exists()


def test_synth_set_survives_coco_round_trip(synth_yaml: Path, tmp_path: Path) -> None:
    """Real labels (synthetic scans) -> COCO json -> convert -> the same YOLO boxes."""
    ds = load_dataset(synth_yaml)
    records = []
    for image, label in ds.iter_samples("val"):
        w, h = Image.open(image).size
        rows = read_label_file(label)
        records.append(
            Record(
                image.name,
                w,
                h,
                xywhn_to_xyxy(rows[:, 1:], w, h),
                [ds.names[int(c)] for c in rows[:, 0]],
                str(label),
            )
        )
    ann = coco.write(tmp_path / "ann.json", records, ds.names)
    convert(ann, "coco", tmp_path / "yolo", images=synth_yaml.parent / "images" / "val", split="val")
    for _image, label in ds.iter_samples("val"):
        original, back = read_label_file(label), read_label_file(tmp_path / "yolo/labels/val" / label.name)
        np.testing.assert_allclose(back, original, atol=2e-6)


# -------------------------------------------------------------------------------------------------- VOC
def _voc_devkit(root: Path) -> Path:
    """A VOC devkit folder: Annotations/s1.xml (one scissors box) and its image in JPEGImages/."""
    _image(root / "JPEGImages/s1.jpg", 200, 100)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations/s1.xml").write_text(
        "<annotation><filename>s1.jpg</filename><size><width>200</width><height>100</height></size>"
        "<object><name>scissors</name><bndbox><xmin>21</xmin><ymin>11</ymin><xmax>60</xmax><ymax>50</ymax>"
        "</bndbox></object></annotation>"
    )
    return root


def test_voc_devkit_layout(tmp_path: Path) -> None:
    root = _voc_devkit(tmp_path / "VOC2007")
    result = convert(root / "Annotations", "voc", tmp_path / "yolo")
    assert result.names == ["scissors"]
    # pixels 20..59 x 10..49 (0-based) -> cx 40/200, cy 30/100, w 40/200, h 40/100
    assert (tmp_path / "yolo/labels/train/s1.txt").read_text() == "0 0.200000 0.300000 0.200000 0.400000\n"


def test_overwrite_never_replaces_the_folder_images_were_found_in(tmp_path: Path) -> None:
    """A VOC devkit's JPEGImages/ is found beside Annotations/, not named on the command line: an input."""
    root = _voc_devkit(tmp_path / "VOC2007")
    with pytest.raises(XrayDetError, match="the output would replace the input"):
        convert(root / "Annotations", "voc", root / "JPEGImages", overwrite=True)
    assert (root / "JPEGImages/s1.jpg").is_file()
    assert not list(root.glob(".JPEGImages.*"))  # no temporary folder left behind


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("train/_annotations.coco.json", "train"),
        ("valid/a.json", "val"),
        ("x/_annotations.valid.jsonl", "val"),
        ("test.jsonl", "test"),
        ("validation/a.xml", "val"),
        ("export.jsonl", "train"),
        ("trainee/a.json", "train"),
    ],
)
def test_split_inference(tmp_path: Path, path: str, expected: str) -> None:
    assert infer_split(tmp_path / path, tmp_path, "train") == expected


def test_cli_prints_the_class_order(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xraydet.cli.main import app

    _roboflow_export(tmp_path / "rf")
    result = CliRunner().invoke(
        app, ["data", "convert", str(tmp_path / "rf"), "--from", "coco", "-o", str(tmp_path / "yolo")]
    )
    assert result.exit_code == 0, result.output
    assert "COCO category 1 'knife' -> class 0" in result.output
    assert "dropped COCO category 0" in result.output
    bad = CliRunner().invoke(
        app, ["data", "convert", str(tmp_path / "rf"), "--from", "yaml", "-o", str(tmp_path / "y2")]
    )
    assert bad.exit_code != 0 and "--from yaml" in str(bad.exception)


@pytest.mark.parametrize("size", ["", "<size><width>64</width><height>48</height></size>"])
def test_voc_box_outside_the_image_is_an_error_not_a_zero_size_line(tmp_path: Path, size: str) -> None:
    """A box wholly past the image edge used to be clipped to nothing and written as '0 1 1 0 0'."""
    _image(tmp_path / "voc/a.png", 64, 48)
    box = "<bndbox><xmin>70</xmin><ymin>50</ymin><xmax>100</xmax><ymax>100</ymax></bndbox>"
    (tmp_path / "voc/a.xml").write_text(
        f"<annotation><filename>a.png</filename>{size}<object><name>knife</name>{box}</object></annotation>"
    )
    with pytest.raises(
        FormatError, match=r"a\.xml.*box \[69\.0, 49\.0, 100\.0, 100\.0\] lies outside the 64x48"
    ):
        convert(tmp_path / "voc", "voc", tmp_path / "yolo")
    assert not (tmp_path / "yolo").exists()


def test_embedded_images_of_two_jsonl_files_in_one_split_do_not_clash(tmp_path: Path) -> None:
    """Both files' first line named its data-URL image image_000001.png: the second file was refused."""
    rows = []
    for colour in ((10, 20, 30), (200, 100, 50)):
        buf = io.BytesIO()
        Image.new("RGB", (200, 100), colour).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        rows.append({"image": url, "suffix": "<loc0256><loc0512><loc0768><loc1000> gun"})
    _jsonl(tmp_path / "export/train/part1.jsonl", rows[:1])
    _jsonl(tmp_path / "export/train/part2.jsonl", rows[1:])
    result = convert(tmp_path / "export", "loctoken", tmp_path / "yolo")
    assert result.splits["train"].images == 2
    images = sorted(p.name for p in (tmp_path / "yolo/images/train").iterdir())
    assert images == ["image_000001.png", "part2__image_000001.png"]
    assert Image.open(tmp_path / "yolo/images/train/part2__image_000001.png").getpixel((0, 0)) == (
        200,
        100,
        50,
    )
    assert read_label_file(tmp_path / "yolo/labels/train/part2__image_000001.txt").shape == (1, 5)


def test_coco_sizes_of_an_exif_rotated_image_as_shown_upright(tmp_path: Path) -> None:
    """A JPEG stored 64x48 with EXIF orientation 6 shows (and loads in Ultralytics) 48x64; a COCO export
    states that upright size. It was refused as 'annotations are for a 48x64 image but ... is 64x48'."""
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "export").mkdir()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "export/a.jpg", exif=exif.tobytes())
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 8, 20, 40]}],
        "categories": [{"id": 1, "name": "knife"}],
    }
    (tmp_path / "export/c.json").write_text(json.dumps(data))
    result = convert(tmp_path / "export/c.json", "coco", tmp_path / "yolo")
    rows = read_label_file(tmp_path / "yolo/labels/train/a.txt")
    np.testing.assert_allclose(rows, [[0, 14 / 48, 28 / 64, 20 / 48, 40 / 64]], atol=1e-6)
    assert any("EXIF rotation" in note for note in result.notes)
    data["images"][0].update(width=50, height=64)  # neither the stored nor the upright size: still refused
    (tmp_path / "export/c.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"annotations are for a 50x64 image but 'a\.jpg' is 64x48"):
        convert(tmp_path / "export/c.json", "coco", tmp_path / "yolo2")


def _data_url(media: str, data: bytes) -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def _encoded(fmt: str, size: tuple[int, int] = (200, 100)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("media", "fmt", "suffix"), [("image/jpeg", "PNG", "png"), ("image/png", "JPEG", "jpg")]
)
def test_embedded_image_is_named_by_the_format_of_its_bytes(
    tmp_path: Path, media: str, fmt: str, suffix: str
) -> None:
    """A data:image/jpeg URL holding PNG bytes was saved as image_000001.jpg (image-format-mismatch)."""
    row = {"image": _data_url(media, _encoded(fmt)), "suffix": "<loc0256><loc0512><loc0768><loc1000> gun"}
    result = convert(_jsonl(tmp_path / "export/a.jsonl", [row]), "loctoken", tmp_path / "yolo")
    assert sorted(p.name for p in (tmp_path / "yolo/images/train").iterdir()) == [f"image_000001.{suffix}"]
    assert Image.open(tmp_path / f"yolo/images/train/image_000001.{suffix}").format == fmt
    assert read_label_file(tmp_path / "yolo/labels/train/image_000001.txt").shape == (1, 5)
    assert any(f"says {media} but holds {suffix.upper()} bytes" in note for note in result.notes)
    assert not [p for p in check_dataset(tmp_path / "yolo").problems if p.code.startswith("image-")]


@pytest.mark.parametrize(
    ("url", "found"),
    [
        (
            _data_url("image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg' width='9' height='9'/>"),
            "svg",
        ),
        ("data:image/svg+xml;utf8,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E", "svg"),
        (_data_url("text/plain", b"hello"), "text/plain"),
        (_data_url("image/gif", _encoded("GIF")), "GIF image"),
    ],
    ids=["svg-base64", "svg-percent-encoded", "text", "gif"],
)
def test_data_url_that_is_not_a_trainable_raster_image_is_an_error_naming_the_line(
    tmp_path: Path, url: str, found: str
) -> None:
    """An SVG data URL ended in "image 'data:image/svg+xml;...' not found"; a GIF one became a .gif file that
    no xraydet data set lists."""
    good = {"image": _data_url("image/png", _encoded("PNG")), "suffix": ""}
    src = _jsonl(tmp_path / "a.jsonl", [good, {"image": url, "suffix": ""}])
    with pytest.raises(FormatError, match=r"a\.jsonl:2: the data URL") as err:
        convert(src, "loctoken", tmp_path / "yolo")
    assert found in str(err.value) and "not found" not in str(err.value)
    assert not (tmp_path / "yolo").exists()
