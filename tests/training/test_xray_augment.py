"""X-ray augmentations: quarter turns move boxes exactly, threat projection multiplies a threat into a bag and
labels it, and both reach Ultralytics' training set through xraydet's job key ``xray_augment``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_support import tiny_job

from xraydet.errors import ConfigError
from xraydet.structures import xywhn_to_xyxy
from xraydet.training import job_from_dict, run_training
from xraydet.training.xray_augment import (
    XrayAugment,
    XrayDataset,
    _cluttered,
    _darker_than,
    _too_close,
    _turn_layer,
    as_xray_dataset,
    background_level,
    project_threat,
    rot90_boxes,
    rotate90,
    threat_free_view,
    threat_layer,
    xray_trainer,
)


def box_of_mask(mask: np.ndarray) -> np.ndarray:
    """Normalised xywh of the nonzero pixels of ``mask`` (pixel edges, as a label would draw them)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return np.array([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("rect", [(5, 9, 30, 14), (0, 0, 7, 40), (40, 20, 70, 48)])
def test_a_quarter_turn_moves_the_box_onto_the_turned_object(k: int, rect: tuple[int, int, int, int]) -> None:
    x1, y1, x2, y2 = rect
    image = np.zeros((48, 72), np.uint8)  # not square: the turn swaps the sides
    image[y1:y2, x1:x2] = 1
    turned, boxes = rotate90(image, box_of_mask(image)[None], k)
    np.testing.assert_allclose(boxes[0], box_of_mask(turned), atol=1e-6)


def test_a_single_channel_scan_keeps_its_channel_axis() -> None:
    image = np.zeros((10, 20, 1), np.uint8)
    image[2:4, 5:15] = 255
    turned, boxes = rotate90(image, box_of_mask(image[..., 0])[None], 1)
    assert turned.shape == (20, 10, 1)
    np.testing.assert_allclose(boxes[0], box_of_mask(turned[..., 0]), atol=1e-6)


def test_four_quarter_turns_are_the_identity() -> None:
    boxes = np.random.default_rng(0).uniform(0.1, 0.5, size=(20, 4))
    np.testing.assert_allclose(rot90_boxes(rot90_boxes(boxes, 1), 3), boxes, atol=1e-6)
    np.testing.assert_allclose(rot90_boxes(boxes, 4), boxes, atol=1e-6)


def bag_scene() -> tuple[np.ndarray, np.ndarray]:
    """A white belt with a grey bag (rows/cols 20-100), and a scan holding one dark blade (transmission 0.2)
    among clutter (transmission 0.8)."""
    bag = np.full((120, 120, 3), 250, np.uint8)
    bag[20:100, 20:100] = 150
    scan = np.full((120, 120, 3), 250, np.uint8)
    scan[40:66, 20:80] = 200
    scan[50:56, 30:70] = 50
    return bag, scan


def test_the_threat_layer_is_the_scan_over_its_belt_inside_the_box_and_fades_to_nothing() -> None:
    _, scan = bag_scene()
    layer, (x1, y1, x2, y2) = threat_layer(scan, box_of_mask(scan[..., 0] < 100), margin=0.15)
    pad = 6  # 0.15 x the 40-px long side
    assert layer.shape == (6 + 2 * pad, 40 + 2 * pad, 3)
    assert (x1, y1, x2, y2) == (pad, pad, pad + 40, pad + 6)
    np.testing.assert_allclose(layer[y1:y2, x1:x2], 0.2, atol=1e-6)
    assert np.all(layer[0] == 1) and np.all(layer[:, 0] == 1)  # outer edge: transmission 1
    # Half-way across the margin the clutter (0.8) is half faded: 1 - 0.5 x (1 - 0.8).
    assert layer[y1, x1 - pad // 2, 0] == pytest.approx(0.9, abs=1e-6)


def test_projection_multiplies_the_threat_into_the_bag_where_its_new_box_says() -> None:
    bag, scan = bag_scene()
    original = bag.copy()
    layer, inner = threat_layer(scan, box_of_mask(scan[..., 0] < 100))
    out, box = project_threat(bag, np.zeros((0, 4)), layer, inner, random.Random(3))
    assert box is not None
    np.testing.assert_array_equal(bag, original)  # the input scan is never changed
    darker = (out[..., 0] < 0.5 * original[..., 0]).astype(np.uint8)
    np.testing.assert_allclose(box, box_of_mask(darker), atol=1e-6)
    assert set(np.unique(out[darker.astype(bool)])) == {30}  # 150 x 0.2: the product of the transmissions
    # The box must lie in the bag, not on the empty belt.
    assert box[0] - box[2] / 2 >= 20 / 120 and box[0] + box[2] / 2 <= 100 / 120


def test_projection_keeps_clear_of_labelled_threats() -> None:
    bag, scan = bag_scene()
    layer, inner = threat_layer(scan, box_of_mask(scan[..., 0] < 100))
    held = np.array([[0.5, 0.35, 0.6, 0.2]])  # a labelled object across the upper half of the bag
    placed = 0
    for seed in range(20):
        _, box = project_threat(bag, held, layer, inner, random.Random(seed), max_overlap=0.0)
        if box is not None:
            placed += 1
            above = box[1] + box[3] / 2 <= held[0, 1] - held[0, 3] / 2 + 1e-6
            below = box[1] - box[3] / 2 >= held[0, 1] + held[0, 3] / 2 - 1e-6
            beside = abs(box[0] - held[0, 0]) >= (box[2] + held[0, 2]) / 2 - 1e-6
            assert above or below or beside, box
    assert placed >= 10


def test_projection_gives_up_on_an_empty_belt_and_on_a_threat_bigger_than_the_scan() -> None:
    bag, scan = bag_scene()
    layer, inner = threat_layer(scan, box_of_mask(scan[..., 0] < 100))
    empty = np.full_like(bag, 250)
    assert project_threat(empty, np.zeros((0, 4)), layer, inner, random.Random(0))[1] is None
    small = bag[:20, :20]
    out, box = project_threat(small, np.zeros((0, 4)), layer, inner, random.Random(0))
    assert box is None and out is small


def test_a_threat_free_bag_keeps_the_widest_box_free_band_and_shows_belt_elsewhere() -> None:
    _, scan = bag_scene()
    blade = box_of_mask(scan[..., 0] < 100)  # rows 50-56, cols 30-70; grown by 10%: rows 49-57
    out = threat_free_view(scan, blade[None])
    assert out is not None and out.shape == scan.shape and out.dtype == scan.dtype
    # Below the blade (rows 57-120: 63 of 120) is the widest band: every pixel there is the scan's own.
    np.testing.assert_array_equal(out[57:], scan[57:])
    assert np.all(out[:57] == 250)  # everywhere else the empty belt, the blade's rows included
    np.testing.assert_array_equal(scan, bag_scene()[1])  # the input scan is never changed


def test_a_threat_free_bag_is_refused_when_the_objects_leave_too_little() -> None:
    _, scan = bag_scene()
    centre = np.array([[0.5, 0.5, 0.6, 0.6]])  # grown by 10% a side to 0.72: bands of 0.14 of the scan
    assert threat_free_view(scan, centre) is None
    assert threat_free_view(scan, centre, min_keep=0.13) is not None
    np.testing.assert_array_equal(threat_free_view(scan, np.zeros((0, 4))), scan)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("inner", [(6, 6, 46, 12), (0, 3, 30, 17), (9, 0, 52, 5)])
def test_a_turned_threat_layer_keeps_its_box_on_the_threat(k: int, inner: tuple[int, int, int, int]) -> None:
    layer = np.random.default_rng(k).uniform(size=(18, 52, 3)).astype(np.float32)  # off-centre boxes too
    turned, turned_inner = _turn_layer(layer, inner, k)
    np.testing.assert_array_equal(turned, np.rot90(layer, k))
    x1, y1, x2, y2 = inner
    threat = np.zeros(layer.shape[:2], np.uint8)
    threat[y1:y2, x1:x2] = 1
    th, tw = turned.shape[:2]
    expected = xywhn_to_xyxy(box_of_mask(np.rot90(threat, k)), tw, th).round().astype(int)[0]
    assert turned_inner == tuple(expected.tolist())


def overlaps(new: np.ndarray, boxes: np.ndarray, limit: float) -> bool:
    """The array form of the overlap limit: ``new`` covers more than ``limit`` of a box, or one of it."""
    ix = np.clip(np.minimum(new[2], boxes[:, 2]) - np.maximum(new[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(new[3], boxes[:, 3]) - np.maximum(new[1], boxes[:, 1]), 0, None)
    area_new = (new[2] - new[0]) * (new[3] - new[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return bool(np.any(ix * iy > limit * np.minimum(area_new, areas)))


def test_the_plain_python_overlap_test_agrees_with_the_array_one() -> None:
    rng = np.random.default_rng(0)
    outcomes = []
    for _ in range(300):
        corners = rng.uniform(0, 100, size=(int(rng.integers(0, 4)), 2, 2))  # per box: two (x, y) corners
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)  # x1, y1, x2, y2
        x1, y1 = (int(v) for v in rng.integers(0, 90, 2))
        new = (x1, y1, x1 + int(rng.integers(1, 30)), y1 + int(rng.integers(1, 30)))
        for limit in (0.0, 0.2):
            outcomes.append(overlaps(np.array(new, np.float32), boxes, limit))
            assert _too_close(new, boxes.tolist(), limit) == outcomes[-1], (new, boxes, limit)
    assert 0.2 < np.mean(outcomes) < 0.8  # both answers were tested


@pytest.mark.parametrize("belt", [[250.0, 250.0, 250.0], [254.6, 200.0, 3.3], [1.0, 1.0, 1.0]])
def test_the_integer_clutter_test_agrees_with_the_float_one(belt: list[float]) -> None:
    threshold = 0.9 * np.array(belt, np.float32)  # 0.9 x 250 = 225 exactly: "<" must stay strict
    image = np.random.default_rng(1).integers(0, 256, size=(60, 50, 3)).astype(np.uint8)
    image[10:20] = np.ceil(threshold).astype(np.uint8) - [1, 1, 0]  # on either side of the threshold
    image[20:30] = np.floor(threshold).astype(np.uint8)
    for box in [(0, 0, 50, 60), (5, 8, 40, 33), (0, 15, 50, 25), (3, 3, 3, 9)]:
        x1, y1, x2, y2 = box
        under = image[y1:y2, x1:x2]
        fraction = np.mean(np.all(under < threshold, axis=-1)) if under.size else None
        for wanted in (0.0, 0.3, 0.5):
            expected = fraction is not None and fraction >= wanted
            assert _cluttered(image, box, _darker_than(threshold), wanted) == expected, (box, wanted)


def test_a_given_belt_level_gives_what_the_scan_s_own_does() -> None:
    bag, scan = bag_scene()
    bag[30:40, 30:90] = 90  # clutter of its own, and a belt level the percentile must find
    box = box_of_mask(scan[..., 0] < 100)
    layer, inner = threat_layer(scan, box)
    given = threat_layer(scan, box, belt=background_level(scan))
    np.testing.assert_array_equal(layer, given[0])
    assert inner == given[1]
    for seed in range(10):
        out, new = project_threat(bag, np.zeros((0, 4)), layer, inner, random.Random(seed))
        out2, new2 = project_threat(
            bag, np.zeros((0, 4)), layer, inner, random.Random(seed), belt=background_level(bag)
        )
        np.testing.assert_array_equal(out, out2)
        assert (new is None and new2 is None) or np.array_equal(new, new2)
    np.testing.assert_array_equal(
        threat_free_view(scan, box[None]), threat_free_view(scan, box[None], belt=background_level(scan))
    )


# -- through Ultralytics --


def xray_dataset(data_yaml: Path, augment: XrayAugment, **hyp: Any) -> XrayDataset:
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    cfg = get_cfg(
        overrides={"imgsz": 160, "mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, **hyp}
    )
    data = check_det_dataset(str(data_yaml))
    return as_xray_dataset(build_yolo_dataset(cfg, data["train"], 8, data, mode="train"), augment)


@pytest.fixture
def synth_copy(synth_yaml: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(synth_yaml.parent, tmp_path / "synth")
    return tmp_path / "synth" / "data.yaml"


def test_the_data_set_turns_scans_and_their_boxes_together(synth_copy: Path) -> None:
    plain = xray_dataset(synth_copy, XrayAugment())
    turned = xray_dataset(synth_copy, XrayAugment(rot90=1.0))
    for index in range(6):
        before = plain.get_image_and_label(index)
        random.seed(index)
        after = turned.get_image_and_label(index)
        matches = [
            k
            for k in (1, 2, 3)
            if np.array_equal(np.rot90(before["img"], k), after["img"])
            and np.allclose(rot90_boxes(before["instances"].bboxes, k), after["instances"].bboxes, atol=1e-6)
        ]
        assert len(matches) == 1, index
        assert after["resized_shape"] == after["img"].shape[:2]
        np.testing.assert_array_equal(after["cls"], before["cls"])


def test_the_data_set_projects_a_labelled_threat_until_mosaic_closes(synth_copy: Path) -> None:
    plain = xray_dataset(synth_copy, XrayAugment())
    projected = xray_dataset(synth_copy, XrayAugment(threat_projection=1.0))
    gained = 0
    for index in range(12):
        before = plain.get_image_and_label(index)
        random.seed(index)
        after = projected.get_image_and_label(index)
        n_before, n_after = len(before["instances"]), len(after["instances"])
        assert n_after in {n_before, n_before + 1} and len(after["cls"]) == n_after
        if n_after > n_before:
            gained += 1
            assert not np.array_equal(before["img"], after["img"])
            assert int(after["cls"][-1, 0]) in set(range(len(plain.data["names"])))
    assert gained >= 6  # a free spot inside the bag is found for most scans

    projected.close_mosaic(_hyp())
    assert projected.xray.threat_projection == 0.0
    random.seed(0)
    assert len(projected.get_image_and_label(0)["instances"]) == len(
        plain.get_image_and_label(0)["instances"]
    )


def test_the_data_set_turns_scans_into_threat_free_bags_until_mosaic_closes(synth_copy: Path) -> None:
    plain = xray_dataset(synth_copy, XrayAugment())
    cleared = xray_dataset(synth_copy, XrayAugment(threat_free=1.0, threat_projection=1.0))
    emptied = 0
    for index in range(12):
        before = plain.get_image_and_label(index)
        random.seed(index)
        after = cleared.get_image_and_label(index)
        if len(after["instances"]) == 0:
            emptied += 1
            assert after["cls"].shape == (0, 1)
            assert after["img"].shape == before["img"].shape
            h, w = before["img"].shape[:2]
            for x1, y1, x2, y2 in xywhn_to_xyxy(before["instances"].bboxes, w, h).round().astype(int):
                region = after["img"][y1:y2, x1:x2]  # each labelled object is gone: one flat belt colour
                assert (region == region.reshape(-1, region.shape[-1])[0]).all()
        else:  # too little box-free bag to keep: the scan is projected into instead
            assert len(after["instances"]) >= len(before["instances"])
    assert emptied >= 6

    cleared.close_mosaic(_hyp())
    assert cleared.xray.threat_free == 0.0


def _hyp() -> Any:
    from ultralytics.cfg import get_cfg

    return get_cfg(overrides={"imgsz": 160})


def test_projection_classes_limit_what_is_projected(synth_copy: Path) -> None:
    dataset = xray_dataset(synth_copy, XrayAugment(threat_projection=1.0, projection_classes=(0,)))
    new_classes = set()
    for index in range(16):
        before = len(dataset.labels[index]["cls"])
        random.seed(100 + index)
        after = dataset.get_image_and_label(index)
        new_classes.update(int(c) for c in after["cls"][before:, 0])
    assert new_classes == {0}


def test_the_belt_level_of_each_scan_is_worked_out_once_and_is_its_own(
    synth_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xraydet.training.xray_augment as xray_augment

    dataset = xray_dataset(synth_copy, XrayAugment(threat_projection=1.0, threat_free=0.3))
    percentile = xray_augment.background_level
    worked_out: list[int] = []
    given: list[tuple[np.ndarray, np.ndarray]] = []  # (scan, the belt level it came with)

    def counted(image: np.ndarray) -> np.ndarray:
        worked_out.append(1)
        return percentile(image)

    def spy(function: Any, scan_arg: int) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            given.append((args[scan_arg], kwargs["belt"]))
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(xray_augment, "background_level", counted)
    for name in ("threat_layer", "project_threat", "threat_free_view"):
        monkeypatch.setattr(xray_augment, name, spy(getattr(xray_augment, name), 0))
    for epoch in range(3):
        for index in range(len(dataset)):
            random.seed(epoch * 100 + index)
            dataset.get_image_and_label(index)
    assert 0 < len(worked_out) <= len(dataset)  # once per scan at most, however often it is drawn
    assert len(given) > 2 * len(dataset)
    for scan, belt in given:  # each function is handed the belt level of the scan it works on
        np.testing.assert_array_equal(belt, percentile(scan))
    for index in range(len(dataset)):
        np.testing.assert_array_equal(dataset.belt_level(index), percentile(dataset.load_image(index)[0]))


def test_rectangular_batches_get_half_turns_only(synth_copy: Path) -> None:
    plain = xray_dataset(synth_copy, XrayAugment(), rect=True)
    turned = xray_dataset(synth_copy, XrayAugment(rot90=1.0), rect=True)  # a batch shares one letterbox shape
    assert turned.rect
    for index in range(6):
        random.seed(index)
        np.testing.assert_array_equal(
            turned.get_image_and_label(index)["img"], np.rot90(plain.get_image_and_label(index)["img"], 2)
        )


def test_scans_with_polygon_labels_pass_unchanged(synth_copy: Path) -> None:
    for label_file in (synth_copy.parent / "labels" / "train").glob("*.txt"):
        lines = []
        for line in label_file.read_text().splitlines():
            c, cx, cy, w, h = (float(v) for v in line.split())
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            lines.append(f"{int(c)} {x1} {y1} {x2} {y1} {x2} {y2} {x1} {y2}")
        label_file.write_text("\n".join(lines) + "\n")
    plain = xray_dataset(synth_copy, XrayAugment())
    augmented = xray_dataset(synth_copy, XrayAugment(rot90=1.0, threat_projection=1.0))
    for index in range(4):
        random.seed(index)
        np.testing.assert_array_equal(
            augmented.get_image_and_label(index)["img"], plain.get_image_and_label(index)["img"]
        )


def test_validation_scans_are_never_augmented(synth_copy: Path) -> None:
    dataset = xray_dataset(synth_copy, XrayAugment(rot90=1.0, threat_projection=1.0))
    dataset.augment = False
    label = dataset.get_image_and_label(0)
    assert len(label["instances"]) == len(dataset.labels[0]["cls"])
    assert label["img"].shape[:2] == label["resized_shape"]


def test_the_trainer_class_trains_on_the_augmented_set(synth_copy: Path, tmp_path: Path) -> None:
    from ultralytics import YOLO

    seen: dict[str, Any] = {}

    def record(trainer: Any) -> None:
        seen["dataset"] = type(trainer.train_loader.dataset).__name__
        seen["xray"] = trainer.train_loader.dataset.xray
        seen["val"] = type(trainer.validator.dataloader.dataset).__name__

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_epoch_end", record)
    augment = XrayAugment(rot90=0.5, threat_projection=0.5, threat_free=0.5)  # some tiles without labels
    model.train(
        trainer=xray_trainer(augment),
        data=str(synth_copy),
        epochs=1,
        imgsz=96,
        batch=8,
        device="cpu",
        workers=0,
        project=str(tmp_path),
        name="run",
        plots=False,
        verbose=False,
        close_mosaic=0,
    )
    assert seen["dataset"] == "XrayDataset" and seen["xray"] == augment
    assert seen["val"] == "YOLODataset"  # validation scans stay as they are


# -- the job key --


def test_the_job_key_validates_its_probabilities_and_names_the_field(tiny_data: Path) -> None:
    raw = tiny_job(tiny_data, xray_augment={"rot90": 0.5, "threat_projection": 0.25, "threat_free": 0.1})
    job = job_from_dict(raw)
    assert job.xray_augment.augment() == XrayAugment(rot90=0.5, threat_projection=0.25, threat_free=0.1)
    assert not job_from_dict(tiny_job(tiny_data)).xray_augment.augment().active
    with pytest.raises(ConfigError, match=r"xray_augment\.rot90"):
        job_from_dict(tiny_job(tiny_data, xray_augment={"rot90": 1.5}))
    with pytest.raises(ConfigError, match=r"xray_augment\.threat_free"):
        job_from_dict(tiny_job(tiny_data, xray_augment={"threat_free": -0.1}))
    with pytest.raises(ConfigError, match=r"xray_augment\.mosaic"):
        job_from_dict(tiny_job(tiny_data, xray_augment={"mosaic": 0.5}))
    with pytest.raises(
        ConfigError, match=r"projection_classes': class id\(s\) \[7\] are not in the data set"
    ):
        job_from_dict(
            tiny_job(tiny_data, xray_augment={"threat_projection": 0.5, "projection_classes": [0, 7]})
        )


@pytest.mark.usefixtures("mlflow_home")
def test_a_job_with_x_ray_augmentation_trains_and_records_it(
    synth_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = tiny_job(synth_copy, epochs=1, gate={"enabled": False}, close_mosaic=0)
    raw["xray_augment"] = {"rot90": 0.5, "threat_projection": 0.5, "projection_classes": [0, 1]}
    with caplog.at_level("INFO", logger="xraydet.training.xray_augment"):
        result = run_training(job_from_dict(raw), tmp_path / "run")
    assert result.status == "completed", result.stop_reason
    expected = XrayAugment(rot90=0.5, threat_projection=0.5, projection_classes=(0, 1))
    assert f"training scans augmented: {expected}" in caplog.text
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "job.yaml").read_text())
    assert saved["xray_augment"] == {
        "rot90": 0.5,
        "threat_projection": 0.5,
        "projection_classes": [0, 1],
        "threat_free": 0.0,
    }
