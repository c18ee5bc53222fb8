"""evaluate() end to end: a predictor with known answers on a tiny labelled folder, and the real tiny model on
real OPIXray scans and real threat-free bags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.evaluation.cases import NAMES, LabelPredictor

from xraydet.errors import XrayDetError
from xraydet.evaluation import evaluate
from xraydet.evaluation.plots import plot_ap_by_iou
from xraydet.evaluation.report import load_report, render_markdown
from xraydet.evaluation.runner import class_mapping, select_images
from xraydet.structures import box_iou

PLOTS = {
    "pr_curves.png",
    "ap_by_iou.png",
    "confusion_matrix.png",
    "detection_vs_false_alarm.png",
    "sample_predictions.png",
}


def test_perfect_predictor_scores_perfectly(label_report_dir: Path):
    r = load_report(label_report_dir)
    assert r.box.map50 == pytest.approx(1.0) and r.box.map50_95 == pytest.approx(1.0)
    assert r.box.map75 == pytest.approx(1.0) and r.box.iou_thresholds == pytest.approx(
        [0.5 + 0.05 * k for k in range(10)]
    )
    assert r.box.per_class_ap_by_iou == {n: pytest.approx([1.0] * 10) for n in NAMES}
    assert r.box.per_class_ap50 == {
        "knife": pytest.approx(1.0),
        "gun": pytest.approx(1.0),
        "bottle": pytest.approx(1.0),
    }
    assert r.box.precision == pytest.approx(1.0) and r.box.recall == pytest.approx(1.0)
    s = r.screening
    assert (s.n_threat_bags, s.n_threat_free_bags, s.n_negative_bags) == (4, 5, 3)  # a b d f | c e n0 n1 n2
    assert s.threat_detection_rate == 1.0 and s.false_alarm_rate == 0.0 and s.accuracy == 1.0
    assert r.sweep.recommended is not None and r.sweep.recommended.false_alarm_rate == 0.0
    assert r.latency.n_images == 3 and r.latency.p50_ms <= r.latency.p95_ms
    assert set(r.plots) == PLOTS and all((label_report_dir / p).is_file() for p in PLOTS)
    md = (label_report_dir / "report.md").read_text()
    assert "seed accuracy (top-1 box class = first label)" in md
    assert "| mAP75 | 1.000 |" in md and "## Localization" in md and "`ap_by_iou.png`" in md
    assert "| knife | 1.000 | 1.000 | 1.000 | 0.000 (0%) |" in md  # AP50, AP75, AP90, drop


def _localization_table(md: str) -> list[str]:
    section = md.split("## Localization", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_localization_section_reads_ap_at_0_5_0_75_and_0_9(label_report_dir: Path):
    r = load_report(label_report_dir)
    loose = [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.3, 0.2, 0.1, 0.0]  # AP50 0.9, AP75 0.45, AP90 0.1
    r.box.per_class_ap_by_iou = {"knife": loose, "gun": [1.0] * 10, "bottle": None}
    rows = _localization_table(render_markdown(r))
    assert rows[0] == "| class | AP50 | AP75 | AP90 | drop AP50 -> AP75 |"
    assert rows[1:] == [
        "| knife | 0.900 | 0.450 | 0.100 | 0.450 (50%) |",
        "| gun | 1.000 | 1.000 | 1.000 | 0.000 (0%) |",
        "| bottle | n/a | n/a | n/a | n/a |",
        "| mean (labelled classes) | 0.950 | 0.725 | 0.550 | 0.225 (24%) |",
    ]
    plot = plot_ap_by_iou(r.box, label_report_dir / "loose.png")
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.width > 100


def test_a_report_written_before_ap_by_iou_still_loads(label_report_dir: Path):
    """report.json from before map75 / per_class_ap_by_iou / iou_thresholds: it loads, says so in Markdown,
    and its plot of AP by IoU is empty rather than an error."""
    file = label_report_dir / "report.json"
    data = json.loads(file.read_text())
    for key in ("map75", "per_class_ap_by_iou", "iou_thresholds"):
        del data["box"][key]
    data["plots"].remove("ap_by_iou.png")
    file.write_text(json.dumps(data))
    r = load_report(label_report_dir)
    assert r.box.map75 is None and r.box.per_class_ap_by_iou == {} and r.box.iou_thresholds == []
    assert r.box.ap_at("knife", 0.75) is None and r.box.mean_ap_by_iou() == []
    assert r.box.map50 == pytest.approx(1.0)
    md = render_markdown(r)
    assert "| mAP75 | n/a |" in md and "AP by IoU threshold is not in this report" in md
    assert plot_ap_by_iou(r.box, label_report_dir / "old.png").is_file()


def test_missed_threat_and_false_alarm(labelled_folder: Path, tmp_path: Path):
    predictor = LabelPredictor(labelled_folder, drop={"a"}, alarm={"n0"})
    predictor.register_negatives(tmp_path / "neg")
    r = evaluate(predictor, labelled_folder, negatives=[tmp_path / "neg"], latency_samples=2)
    s = r.screening
    assert s.threats_found == 3 and s.threat_detection_rate == pytest.approx(3 / 4)
    assert s.false_alarms == 1 and s.false_alarm_rate == pytest.approx(1 / 5)
    assert s.false_alarm_rate_negatives == pytest.approx(1 / 3)
    assert s.accuracy == pytest.approx(
        4 / 5
    )  # image a has no box; d's first label is gun, boxes tie -> gun first
    assert r.box.per_class_ap50["knife"] < 1.0 and r.box.per_class_ap50["gun"] == pytest.approx(1.0)
    # the false alarm on a threat-free folder does not touch mAP
    assert r.box.per_class_recall["knife"] == pytest.approx(2 / 3)


def test_without_negatives_false_alarms_come_from_threat_free_images_of_the_split(labelled_folder: Path):
    r = evaluate(LabelPredictor(labelled_folder, alarm={"e"}), labelled_folder, latency_samples=1)
    assert r.screening.n_threat_free_bags == 2 and r.screening.false_alarm_rate == pytest.approx(1 / 2)
    assert r.screening.false_alarm_rate_negatives is None


def test_predictions_file_holds_boxes_at_operating_threshold(label_report_dir: Path):
    lines = (label_report_dir / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert len(records) == 9 and len({r["id"] for r in records}) == 9
    by_name = {Path(r["image"]).stem: r for r in records}
    assert [b["name"] for b in by_name["d"]["gt"]] == ["gun", "knife"]
    assert by_name["n0"]["source"] == "negatives" and by_name["n0"]["pred"] == []
    assert all(b["confidence"] >= 0.25 for r in records for b in r["pred"])


@pytest.mark.parametrize(
    ("model", "data", "expected"),
    [
        (["knife", "gun", "bottle"], ["knife", "gun", "bottle"], None),
        (["Gun", "knife"], ["knife", "gun", "bottle"], [1, 0]),
        (["knife", "axe"], ["knife", "gun"], [0, -1]),
    ],
)
def test_class_mapping(model, data, expected):
    mapping = class_mapping(model, data)
    assert (mapping is None) if expected is None else mapping.tolist() == expected


def test_class_mapping_without_shared_names_is_an_error():
    with pytest.raises(XrayDetError, match="share no name"):
        class_mapping(["cat", "dog"], NAMES)


def test_sample_is_seeded_and_sorted():
    items = [Path(f"{i}.png") for i in range(50)]
    a, b = select_images(items, 10, seed=1), select_images(items, 10, seed=1)
    assert a == b == sorted(a) and len(set(a)) == 10
    assert select_images(items, 10, seed=2) != a
    assert select_images(items, None, seed=1) == items


def test_bad_inputs(labelled_folder: Path, tmp_path: Path):
    with pytest.raises(XrayDetError, match="conf must be between 0 and 1"):
        evaluate(LabelPredictor(labelled_folder), labelled_folder, conf=1.5)
    with pytest.raises(XrayDetError, match="model file not found"):
        evaluate(tmp_path / "missing.pt", labelled_folder)
    with pytest.raises(XrayDetError, match="no split 'test'"):
        evaluate(LabelPredictor(labelled_folder), labelled_folder, split="test")


def test_a_truncated_image_in_the_split_is_named_not_a_traceback(labelled_folder: Path):
    """PIL says only "Truncated File Read" (an OSError): the error must name the scan."""
    predictor = LabelPredictor(labelled_folder)  # it reads the scans now, while they are whole
    scan = labelled_folder.parent / "images" / "val" / "b.png"
    scan.write_bytes(scan.read_bytes()[:200])
    with pytest.raises(XrayDetError, match=r"b\.png: not a readable image"):
        evaluate(predictor, labelled_folder, latency_samples=1, plots=False)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_report_has_every_metric(real_report_dir: Path, tiny_model: Path):
    r = load_report(real_report_dir)
    assert (r.n_images, r.n_negative_images) == (60, 40)
    assert r.model == str(tiny_model) and r.backend == "ultralytics" and r.eval_conf == 0.001
    b, s, lat = r.box, r.screening, r.latency
    for v in (b.map50, b.map50_95, b.precision, b.recall, *b.per_class_ap50.values()):
        assert v is None or 0.0 <= v <= 1.0
    assert set(b.per_class_ap50) == set(r.names) and b.n_labels >= 60
    assert 0.0 <= b.map50_95 <= b.map50
    assert np.array(b.confusion_matrix).sum() >= b.n_labels  # every label lands in a row
    assert s.n_threat_bags == 60 and s.n_threat_free_bags == 40 and s.n_negative_bags == 40
    for v in (s.threat_detection_rate, s.threat_detection_rate_any, s.false_alarm_rate, s.accuracy):
        assert v is not None and 0.0 <= v <= 1.0
    assert s.threat_detection_rate <= s.threat_detection_rate_any
    assert s.threats_found == round(s.threat_detection_rate * s.n_threat_bags)
    assert set(s.per_class_accuracy) <= set(r.names) and s.avg_detections >= 0
    points = r.sweep.points
    assert len(points) == 99
    det = [p.detection_rate for p in points]
    far = [p.false_alarm_rate for p in points]
    assert det == sorted(det, reverse=True) and far == sorted(far, reverse=True)
    assert lat.n_images == 20 and 0 < lat.p50_ms <= lat.p95_ms and lat.images_per_s > 0
    for name in PLOTS:
        with Image.open(real_report_dir / name) as im:
            assert im.format == "PNG" and im.width > 100
    md = (real_report_dir / "report.md").read_text()
    assert "mAP50" in md and "false-alarm rate" in md and "Threshold sweep" in md


@pytest.mark.realdata
@pytest.mark.slow
def test_real_screening_numbers_follow_from_the_predictions_file(trigger_happy_report_dir: Path):
    """Recount detection, false alarms and seed accuracy from predictions.jsonl with plain code.

    On the trigger-happy model's report: the tiny model keeps no box at 0.25, and a recount of zeros would
    agree with any counting code.
    """
    r = load_report(trigger_happy_report_dir)
    threats = {r.names.index(t) for t in r.threats}
    found = threat_bags = alarms = clean = correct = labelled = 0
    for line in (trigger_happy_report_dir / "predictions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        gt_t = [b["xyxy"] for b in rec["gt"] if b["class_id"] in threats]
        pr_t = [b["xyxy"] for b in rec["pred"] if b["class_id"] in threats]
        if gt_t:
            threat_bags += 1
            found += bool(pr_t) and bool((box_iou(np.array(pr_t), np.array(gt_t)) >= 0.1).any())
        else:
            clean += 1
            alarms += bool(pr_t)
        if rec["gt"] and rec["source"] == "dataset":
            labelled += 1
            top = max(rec["pred"], key=lambda b: b["confidence"], default=None)
            correct += top is not None and top["class_id"] == rec["gt"][0]["class_id"]
    s = r.screening
    # The recount has something to count: threats found, threats missed, false alarms and right top classes.
    assert 0 < found < threat_bags and alarms > 0 and 0 < correct < labelled, (found, alarms, correct)
    assert (s.threats_found, s.n_threat_bags, s.false_alarms, s.n_threat_free_bags) == (
        found,
        threat_bags,
        alarms,
        clean,
    )
    assert (threat_bags, clean) == (350, 40)
    assert s.accuracy == pytest.approx(correct / labelled)


def test_without_any_label_the_box_metrics_are_not_measured_rather_than_zero(labelled_folder: Path,
                                                                              tmp_path: Path):
    """Only threat-free bags: there is no AP to average. 0.0 would fail a gate as if the model were bad, and
    compare as equal to another model's 0.0; None says what happened, and the report, the gate and the
    sweep say 'not measured'."""
    from xraydet.evaluation.gate import GatePolicy, check_gate

    for label in (labelled_folder.parent / "labels" / "val").glob("*.txt"):
        label.unlink()
    predictor = LabelPredictor(labelled_folder, alarm={"e"})
    predictor.register_negatives(tmp_path / "neg")
    out = tmp_path / "report"
    r = evaluate(predictor, labelled_folder, negatives=[tmp_path / "neg"], out_dir=out, latency_samples=1)
    assert r.box.n_labels == 0
    assert (r.box.map50, r.box.map75, r.box.map50_95, r.box.precision, r.box.recall) == (None,) * 5
    assert r.screening.false_alarm_rate is not None  # what was measured still is
    assert r.sweep.note == "no bag with a labelled threat was evaluated: the detection rate is not measured"
    assert "| mAP50 | n/a |" in (out / "report.md").read_text()
    assert load_report(out).box.map50 is None
    gate = check_gate(out, GatePolicy(min_map50=0.5))
    mAP = next(c for c in gate.criteria if c.name == "mAP50")
    assert not mAP.passed and mAP.detail.startswith("not measured")


class _ReorderedWithUnknownIds(LabelPredictor):
    """The perfect predictor under another class order (bottle, gun, knife), adding on the threat-free bags a
    box of class -1 (what HttpPredictor gives a name it does not know) and one past its last class."""

    def __init__(self, dataset_yaml: Path) -> None:
        super().__init__(dataset_yaml)
        self.names = ["bottle", "gun", "knife"]
        self.to_model = np.array([2, 1, 0])  # data set id -> model id

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7):
        from xraydet.structures import Detections

        found = super().predict(image, conf, iou)
        if len(found) == 0:  # a threat-free bag
            return Detections(np.array([[1, 1, 20, 20], [5, 5, 30, 30]]), [-1, 3], [0.9, 0.8])
        return Detections(found.xyxy, self.to_model[found.class_id], found.confidence)


def test_class_ids_the_model_does_not_have_are_dropped_not_wrapped(labelled_folder: Path, tmp_path: Path):
    predictor = _ReorderedWithUnknownIds(labelled_folder)
    predictor.register_negatives(tmp_path / "neg")
    r = evaluate(predictor, labelled_folder, negatives=[tmp_path / "neg"], latency_samples=1)
    # -1 would have become the model's last class (knife, a threat): a false alarm on every threat-free bag
    assert r.screening.false_alarms == 0 and r.screening.false_alarm_rate == 0.0
    assert r.box.map50 == pytest.approx(1.0) and r.screening.threat_detection_rate == 1.0


def test_class_ids_outside_the_shared_classes_are_dropped(labelled_folder: Path, tmp_path: Path):
    """Model and data set share their classes (no mapping): an id outside them still counts as nothing."""
    predictor = _ReorderedWithUnknownIds(labelled_folder)
    predictor.names, predictor.to_model = list(NAMES), np.arange(len(NAMES))
    predictor.register_negatives(tmp_path / "neg")
    r = evaluate(predictor, labelled_folder, negatives=[tmp_path / "neg"], latency_samples=1)
    assert r.screening.false_alarms == 0 and r.box.map50 == pytest.approx(1.0)
    assert sum(map(sum, r.box.confusion_matrix)) == r.box.n_labels  # no box off the matrix
