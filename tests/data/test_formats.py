"""Annotation formats read/write, on hand-made samples whose boxes are known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xraydet.data.formats import FormatError, Record, coco, loctoken, voc
from xraydet.data.formats.yolo import format_lines
from xraydet.structures import Detections, box_iou

# --------------------------------------------------------------------------------------------- loc tokens
# (image w, h, pixel box xyxy, tokens y-first over 1024 bins), worked out by hand: bin = coord / side * 1024.
LOC_CASES = [
    (1024, 512, [100, 50, 300, 450], "<loc0100><loc0100><loc0900><loc0300>"),
    (1024, 512, [256, 128, 768, 384], "<loc0256><loc0256><loc0768><loc0768>"),
    (512, 1024, [64, 512, 128, 1000], "<loc0512><loc0128><loc1000><loc0256>"),
    (416, 416, [0, 0, 208, 104], "<loc0000><loc0000><loc0256><loc0512>"),
]


@pytest.mark.parametrize(("w", "h", "box", "tokens"), LOC_CASES)
def test_loc_tokens_encode_y_first_over_1024(w: int, h: int, box: list[int], tokens: str) -> None:
    assert loctoken.encode_box(np.array(box), w, h) == tokens


@pytest.mark.parametrize(("w", "h", "box", "tokens"), LOC_CASES)
def test_loc_tokens_decode_to_the_known_box(w: int, h: int, box: list[int], tokens: str) -> None:
    boxes, labels = loctoken.parse_answer(f"{tokens} knife")
    assert labels == ["knife"]
    np.testing.assert_allclose(boxes[0] * [w, h, w, h], box)


def test_known_tokens_give_the_known_yolo_line() -> None:
    """1024x512 image, knife at x 100..300, y 50..450 px: cx=200/1024, cy=250/512, w=200/1024, h=400/512."""
    boxes, _ = loctoken.parse_answer("<loc0100><loc0100><loc0900><loc0300> knife")
    line = format_lines(Detections(boxes * [1024, 512, 1024, 512], [0]), 1024, 512)
    assert line == "0 0.195312 0.488281 0.195312 0.781250\n"


def _seed_reader(tokens: str, w: int, h: int) -> np.ndarray:
    """The seed team's converter: read the four numbers as x-first, over 1000 bins (the bug)."""
    values = [int(t) for t in tokens.replace("<loc", " ").replace(">", " ").split()[:4]]
    x1, y1, x2, y2 = values
    return np.array([[x1 / 1000 * w, y1 / 1000 * h, x2 / 1000 * w, y2 / 1000 * h]])


def test_an_x_first_1000_bin_reader_transposes_the_box_ours_does_not() -> None:
    truth = np.array([[100.0, 50.0, 300.0, 450.0]])  # a tall, thin blade in a 1024x512 scan
    tokens = loctoken.encode_box(truth[0], 1024, 512)
    wrong = _seed_reader(tokens, 1024, 512)
    ours = loctoken.parse_answer(f"{tokens} knife")[0] * [1024, 512, 1024, 512]
    assert box_iou(ours, truth)[0, 0] == pytest.approx(1.0)
    assert box_iou(wrong, truth)[0, 0] < 0.15
    wrong_w, wrong_h = wrong[0, 2] - wrong[0, 0], wrong[0, 3] - wrong[0, 1]
    assert wrong_w > wrong_h  # the tall blade became a wide, flat box


def test_several_objects_and_segment_tokens() -> None:
    text = (
        "<loc0000><loc0512><loc0512><loc1023> gun ; "
        "<loc0100><loc0100><loc0200><loc0300><seg012><seg099> folding knife"
    )
    boxes, labels = loctoken.parse_answer(text)
    assert labels == ["gun", "folding knife"]
    np.testing.assert_allclose(
        boxes, [[0.5, 0.0, 1023 / 1024, 0.5], [100 / 1024, 100 / 1024, 300 / 1024, 200 / 1024]]
    )
    assert loctoken.parse_answer("")[0].shape == (0, 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<loc0100><loc0100><loc0900> knife", "expected '<locYMIN>"),
        ("<loc0100><loc0100><loc0900><loc0300>", "no class name"),
        ("<loc0100><loc0100><loc1024><loc0300> knife", "bin 1024 >= 1024"),
        ("<loc0900><loc0100><loc0100><loc0300> knife", "empty box"),
        ("knife <loc0100><loc0100><loc0900><loc0300>", "expected '<locYMIN>"),
    ],
)
def test_loc_token_errors_quote_the_piece(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        loctoken.parse_answer(text, where="a.jsonl:3: ")


def test_loc_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    good = json.dumps(
        {"image": "a.jpg", "prefix": "detect knife", "suffix": "<loc0001><loc0001><loc0009><loc0009> knife"}
    )
    path.write_text(f"{good}\n{{not json\n")
    with pytest.raises(FormatError, match=r"a\.jsonl:2"):
        loctoken.read(path)
    path.write_text(f"{good}\n\n" + json.dumps({"image": "b.jpg", "suffix": "<loc0001> knife"}) + "\n")
    with pytest.raises(FormatError, match=r"a\.jsonl:3"):
        loctoken.read(path)


@pytest.mark.parametrize("style", ["paligemma", "openai"])
def test_loc_jsonl_round_trip(tmp_path: Path, style: str) -> None:
    rec = Record(
        "a.jpg", 1024, 512, np.array([[100, 50, 300, 450], [512, 256, 1024, 512]]), ["knife", "gun"], "x"
    )
    path = loctoken.write(tmp_path / "a.jsonl", [rec], ["knife", "gun"], style=style)
    back = loctoken.read(path).records[0]
    assert back.file_name == "a.jpg" and back.labels == ["knife", "gun"] and back.normalized
    back.set_size(1024, 512)
    # the second box ends on the image edge: bin 1023 is the last, so it comes back 1 bin (0.5 px) short
    np.testing.assert_allclose(back.boxes, [[100, 50, 300, 450], [512, 256, 1023, 511.5]])


# ------------------------------------------------------------------------------------------------- COCO
def _roboflow_coco() -> dict:
    """A Roboflow-style export: category 0 is the super-category with no annotations."""
    return {
        "images": [
            {"id": 0, "file_name": "bag1.jpg", "width": 640, "height": 480},
            {"id": 1, "file_name": "bag2.jpg", "width": 640, "height": 480},
        ],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 2, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
            {
                "id": 1,
                "image_id": 0,
                "category_id": 1,
                "bbox": [100.5, 200, 50, 25],
                "area": 1250,
                "iscrowd": 0,
            },
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [620, 470, 40, 20], "area": 800, "iscrowd": 0},
        ],
        "categories": [
            {"id": 0, "name": "threats", "supercategory": "none"},
            {"id": 1, "name": "knife", "supercategory": "threats"},
            {"id": 2, "name": "gun", "supercategory": "threats"},
        ],
    }


def test_coco_roboflow_supercategory_is_dropped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "_annotations.coco.json"
    path.write_text(json.dumps(_roboflow_coco()))
    result = coco.read(path)
    assert result.declared_names == ["knife", "gun"]
    assert result.source_ids == {"knife": 1, "gun": 2}
    assert any("dropped COCO category 0 'threats'" in n for n in result.notes)
    first, second = result.records
    assert first.labels == ["gun", "knife"]
    np.testing.assert_allclose(first.boxes, [[10, 20, 40, 60], [100.5, 200, 150.5, 225]])
    np.testing.assert_allclose(second.boxes, [[620, 470, 640, 480]])  # clipped to the image
    assert any("clipped" in n for n in second.notes)


def test_coco_keeps_a_used_category_zero(tmp_path: Path) -> None:
    data = _roboflow_coco()
    data["annotations"].append({"id": 9, "image_id": 1, "category_id": 0, "bbox": [1, 1, 5, 5]})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    assert coco.read(path).declared_names == ["threats", "knife", "gun"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["annotations"][1].update(category_id=7), r"annotations\[1\] \(id=1\): category_id 7"),
        (lambda d: d["annotations"][2].update(image_id=5), r"annotations\[2\] \(id=2\): image_id 5"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id=0\): bbox"),
        (lambda d: d["annotations"][0].update(bbox=[10, 20, 0, 40]), r"annotations\[0\] \(id=0\): empty box"),
        (
            lambda d: d["annotations"][0].update(bbox=[float("nan"), 20, 30, 40]),
            r"annotations\[0\] \(id=0\): bbox .* finite",
        ),
        (
            lambda d: d["annotations"][1].update(bbox=[1, 2, float("inf"), 4]),
            r"annotations\[1\] \(id=1\): bbox .* finite",
        ),
        (
            lambda d: d["images"].append({"id": 0, "file_name": "bag3.jpg", "width": 64, "height": 64}),
            r"images\[0\] and images\[2\] share id 0",
        ),
        (lambda d: d["images"][1].pop("width"), r"images\[1\]: missing 'width'"),
        (lambda d: d.pop("categories"), "expected a COCO object"),
        # used to be tracebacks (AttributeError / TypeError) or, for a string iscrowd, a silently skipped box
        (lambda d: d["annotations"].append("bag1.jpg"), r"annotations\[3\] should be an object"),
        (lambda d: d.update(images=5), r"'images' should be a list, got int"),
        (lambda d: d["images"].insert(1, 3), r"images\[1\] should be an object, got 3"),
        (lambda d: d["categories"].append("knife"), r"categories\[3\] should be an object"),
        (
            lambda d: d["annotations"][0].update(iscrowd="0"),
            r"annotations\[0\] \(id=0\): 'iscrowd' should be 0 or 1",
        ),
    ],
)
def test_coco_errors_name_the_record(tmp_path: Path, mutate, message: str) -> None:
    data = _roboflow_coco()
    mutate(data)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=message) as info:
        coco.read(path)
    assert str(path) in str(info.value)


def test_coco_duplicate_image_id_is_refused_not_overwritten(tmp_path: Path) -> None:
    """Two images with one id: the annotations of the first would silently land on the second."""
    data = _roboflow_coco()
    data["images"][1]["id"] = 0
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"images\[0\] and images\[1\] share id 0") as info:
        coco.read(path)
    assert str(path) in str(info.value)


def test_non_utf8_annotation_files_are_format_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(json.dumps(_roboflow_coco()).replace("bag1", "sac\u00e9").encode("latin-1"))
    with pytest.raises(FormatError, match=r"c\.json:1: not UTF-8"):
        coco.read(path)
    good = json.dumps({"image": "a.jpg", "suffix": "<loc0001><loc0001><loc0009><loc0009> knife"})
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(f"{good}\n{good}\n".encode() + '{"image": "\u00e9.jpg"}\n'.encode("latin-1"))
    with pytest.raises(FormatError, match=r"a\.jsonl:3: not UTF-8"):
        loctoken.read(jsonl)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (["detect knife", {"role": "assistant", "content": ""}], r"messages\[0\] should be an object"),
        ([{"role": "user", "content": 7}], r"messages\[0\]\.content should be text or a list"),
        (
            [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]},
                {"role": "assistant", "content": [{"type": "text", "text": None}]},
            ],
            "image_url should be a URL string",
        ),
    ],
)
def test_openai_jsonl_with_malformed_messages_names_the_line(
    tmp_path: Path, messages: list, message: str
) -> None:
    good = json.dumps({"image": "a.jpg", "suffix": ""})
    path = tmp_path / "a.jsonl"
    path.write_text(f"{good}\n{json.dumps({'messages': messages})}\n")
    with pytest.raises(FormatError, match=rf"a\.jsonl:2: {message}"):
        loctoken.read(path)


def test_coco_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    with pytest.raises(FormatError, match=r"c\.json:3"):
        coco.read(path)


# -------------------------------------------------------------------------------------------------- VOC
VOC_XML = """<annotation>
  <folder>VOC</folder><filename>scan_01.jpg</filename>
  <size><width>300</width><height>200</height><depth>3</depth></size>
  <object><name>knife</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>11</ymin><xmax>100</xmax><ymax>60</ymax></bndbox></object>
  <object><name>gun</name><bndbox><xmin>150</xmin><ymin>100</ymin><xmax>310</xmax><ymax>200</ymax></bndbox></object>
</annotation>"""


def test_voc_reads_one_based_inclusive_corners(tmp_path: Path) -> None:
    path = tmp_path / "scan_01.xml"
    path.write_text(VOC_XML)
    rec = voc.read(path).records[0]
    assert (rec.file_name, rec.width, rec.height, rec.labels) == ("scan_01.jpg", 300, 200, ["knife", "gun"])
    # xmin=1..xmax=100 covers the first 100 pixel columns: [0, 100) in continuous coordinates
    np.testing.assert_allclose(rec.boxes, [[0, 10, 100, 60], [149, 99, 300, 200]])
    assert any("clipped" in n for n in rec.notes)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (
            VOC_XML.replace("<xmax>100</xmax>", "<xmax>abc</xmax>"),
            r"<object> #1 'knife': <xmax> is not a number",
        ),
        (VOC_XML.replace("<name>gun</name>", ""), r"<object> #2: missing <name>"),
        (
            VOC_XML.replace("<ymax>60</ymax>", "<ymax>nan</ymax>"),
            r"<object> #1 'knife': <ymax> is not a finite number",
        ),
        (
            VOC_XML.replace("<xmax>310</xmax>", "<xmax>inf</xmax>"),
            r"<object> #2 'gun': <xmax> is not a finite",
        ),
        (VOC_XML.replace("<xmax>100</xmax>", "<xmax>0</xmax>"), "empty box"),
        (VOC_XML.replace("</annotation>", ""), "not valid XML"),
    ],
)
def test_voc_errors_name_the_object(tmp_path: Path, xml: str, message: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(xml)
    with pytest.raises(FormatError, match=message):
        voc.read(path)


# ---------------------------------------------------------------------------------------- round trips
BOXES = np.array([[0, 0, 50, 20], [100, 40, 300, 199], [299, 0, 300, 200]], dtype=float)
LABELS = ["knife", "gun", "knife"]


@pytest.mark.parametrize(
    ("fmt", "tolerance"),
    # loc tokens: within one bin (the far image edge has no bin of its own: 1023 is the last one)
    [("coco", 1e-9), ("voc", 1e-9), ("loctoken", 300 / 1024 + 1e-9)],
)
def test_write_then_read_gives_the_same_boxes(tmp_path: Path, fmt: str, tolerance: float) -> None:
    rec = Record("scan.jpg", 300, 200, BOXES.copy(), list(LABELS), "mem")
    if fmt == "coco":
        back = coco.read(coco.write(tmp_path / "a.json", [rec], ["knife", "gun"])).records[0]
    elif fmt == "voc":
        back = voc.read(voc.write(tmp_path / "a.xml", rec)).records[0]
    else:
        back = loctoken.read(loctoken.write(tmp_path / "a.jsonl", [rec], ["knife", "gun"])).records[0]
        back.set_size(300, 200)
    assert back.labels == LABELS
    np.testing.assert_allclose(back.boxes, BOXES, atol=tolerance)


# ------------------------------------------------------------------------------------ edges (mutation audit)
def test_loc_encode_rounds_to_the_nearest_bin_not_down() -> None:
    """x1 = 100.6 px of 1024 is bin 100.6: rounds to 101 (truncation would give 100)."""
    tokens = loctoken.encode_box(np.array([100.6, 0.0, 300.0, 256.0]), 1024, 1024)
    assert tokens == "<loc0000><loc0101><loc0256><loc0300>"


def test_loc_zero_size_box_is_refused() -> None:
    """xmin == xmax (both bin 100... here ymin 100, xmin 100, ymax 100): an empty box, not a 1-bin one."""
    with pytest.raises(FormatError, match="empty box"):
        loctoken.parse_answer("<loc0100><loc0100><loc0100><loc0200> knife")
    with pytest.raises(FormatError, match="empty box"):
        loctoken.parse_answer("<loc0100><loc0200><loc0300><loc0200> knife")


def test_loc_jsonl_keeps_the_stated_image_size(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    answer = "<loc0100><loc0100><loc0900><loc0300> knife"
    rows = [
        {"image": "a.jpg", "suffix": answer, "width": 1024, "height": 512},
        {"image": "b.jpg", "suffix": answer},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stated, unstated = loctoken.read(path).records
    assert (stated.width, stated.height) == (1024, 512)
    assert (unstated.width, unstated.height) == (None, None)


def test_loc_jsonl_stated_size_that_differs_from_the_image_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    from xraydet.data.convert import convert

    src = tmp_path / "export"
    src.mkdir()
    Image.new("RGB", (320, 240)).save(src / "scan.jpg")
    row = {
        "image": "scan.jpg",
        "suffix": "<loc0100><loc0100><loc0900><loc0300> knife",
        "width": 640,
        "height": 480,
    }
    (src / "train.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(FormatError, match=r"annotations are for a 640x480 image but 'scan\.jpg' is 320x240"):
        convert(src, "loctoken", tmp_path / "yolo")
    assert not (tmp_path / "yolo").exists()


def test_coco_crowd_annotation_is_skipped_and_noted(tmp_path: Path) -> None:
    data = _roboflow_coco()
    first_id = data["images"][0]["id"]
    n_before = sum(a["image_id"] == first_id for a in data["annotations"])
    data["annotations"].append(
        {"id": 99, "image_id": first_id, "category_id": 1, "bbox": [300, 300, 50, 50], "iscrowd": 1}
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    first = coco.read(path).records[0]
    assert len(first.boxes) == n_before == 2
    assert not any(np.allclose(b, [300, 300, 350, 350]) for b in first.boxes)
    assert any("annotations[" in n and "(id=99): crowd annotation skipped" in n for n in first.notes)


def test_yolo_class_id_equal_to_the_number_of_classes_is_refused(yolo_set) -> None:
    from xraydet.data.formats import yolo

    data = yolo_set("s", ["knife", "gun"], {"train": {"img0": ["2 0.5 0.5 0.2 0.2"]}})
    with pytest.raises(FormatError, match=r"class id 2 outside names \(0\.\.1\)") as info:
        yolo.read_split(data, "train")
    assert "img0.txt" in str(info.value)
    ok = yolo_set("t", ["knife", "gun"], {"train": {"img0": ["1 0.5 0.5 0.2 0.2"]}})
    assert yolo.read_split(ok, "train").records[0].labels == ["gun"]


def test_utf8_bom_and_windows_line_endings_are_read(tmp_path: Path) -> None:
    """Windows tools write a BOM and CRLF; json.loads refused the BOM ('Unexpected UTF-8 BOM')."""
    line = json.dumps({"image": "a.jpg", "suffix": "<loc0100><loc0100><loc0900><loc0300> knife "})
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + f"{line}\r\n\r\n{line}\r\n".encode())
    records = loctoken.read(jsonl).records
    assert [r.labels for r in records] == [["knife"], ["knife"]]
    np.testing.assert_allclose(records[0].boxes, [[100 / 1024, 100 / 1024, 300 / 1024, 900 / 1024]])
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_roboflow_coco(), indent=1).replace("\n", "\r\n").encode())
    assert coco.read(path).declared_names == ["knife", "gun"]


def test_coco_null_or_missing_iscrowd_is_not_a_crowd(tmp_path: Path) -> None:
    data = _roboflow_coco()
    data["annotations"][0]["iscrowd"] = None
    del data["annotations"][1]["iscrowd"]
    path = tmp_path / "_annotations.coco.json"
    path.write_text(json.dumps(data))
    first, _ = coco.read(path).records
    assert first.labels == ["gun", "knife"]  # both boxes kept, none skipped as a crowd


# ------------------------------------------------------------------------------------ review: writer/reader
@pytest.mark.parametrize(
    ("box", "size"),
    [
        ([100.0, 40.0, 100.4, 60.0], (1024, 1024)),  # 0.4 px wide: both ends round to bin 100
        ([1023.6, 0.0, 1024.0, 10.0], (1024, 1024)),  # on the far edge: both ends clip to bin 1023
        ([10.0, 45.01, 1338.0, 45.16], (2287, 1444)),  # a 0.15 px tall sliver
    ],
)
def test_a_box_under_one_bin_is_written_as_one_bin_and_reads_back(
    tmp_path: Path, box: list[float], size: tuple[int, int]
) -> None:
    """The writer must not emit ``min == max`` bins, which the reader (rightly) refuses as an empty box."""
    w, h = size
    rec = Record("a.jpg", w, h, np.array([box]), ["knife"], "mem")
    back = loctoken.read(loctoken.write(tmp_path / "a.jsonl", [rec], ["knife"])).records[0]
    back.set_size(w, h)
    bins = np.abs(back.boxes[0] - box) / [w, h, w, h] * 1024
    assert bins.max() <= 2.0  # one bin of rounding, one more where the far edge has no bin of its own


@pytest.mark.parametrize(
    "text",
    [
        "<loc0100><loc0100><loc0900><loc0300><loc0400> knife",  # five loc tokens
        "<loc0100><loc0100><loc0900><loc0300> knife <loc0010><loc0010><loc0090><loc0030> gun",  # no ';'
    ],
)
def test_loc_tokens_in_the_class_name_are_an_error(text: str) -> None:
    """Was read as one object of class '<loc0400> knife' (a new class in the sorted class list)."""
    with pytest.raises(FormatError, match=r"a\.jsonl:3: class name .*<loc"):
        loctoken.parse_answer(text, where="a.jsonl:3: ")


@pytest.mark.parametrize("label", ["knife; gun", " knife", "<loc0001> knife", ""])
def test_a_class_name_that_would_not_read_back_is_not_written(tmp_path: Path, label: str) -> None:
    rec = Record("a.jpg", 100, 100, np.array([[10.0, 10.0, 50.0, 50.0]]), [label], "mem")
    with pytest.raises(FormatError, match="cannot be written"):
        loctoken.write(tmp_path / "a.jsonl", [rec], [label])
    assert not (tmp_path / "a.jsonl").exists()


def test_class_names_with_spaces_and_unicode_round_trip(tmp_path: Path) -> None:
    names = ["folding knife", "couteau à cran", "刀"]
    rec = Record("a.jpg", 416, 416, np.array([[0, 0, 416, 416], [10, 20, 30, 40], [5, 6, 7, 8]]), names, "m")
    back = loctoken.read(loctoken.write(tmp_path / "a.jsonl", [rec], names)).records[0]
    assert back.labels == names
