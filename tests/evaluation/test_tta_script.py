"""benchmarks/tta.py: one evaluation per mode on the same scans, each mode's report kept, figures tabled."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_scripts import load_benchmark_script

from xraydet.evaluation import evaluate
from xraydet.evaluation.report import load_report


def load_script():
    return load_benchmark_script("tta")


def test_each_mode_is_evaluated_on_the_same_scans(onnx_model: Path, tiny_model: Path, tmp_path: Path, capsys):
    data = tiny_model.parents[2] / "data" / "data.yaml"
    out = tmp_path / "tta"
    script = load_script()
    result = script.main([str(onnx_model), str(data), "--max-images", "5", "--latency-samples", "2",
                          "--out", str(out), "--plot", str(tmp_path / "tta.png")])
    modes = result["modes"]
    assert [(m["tta"], m["model_calls_per_scan"]) for m in modes] == [("off", 1), ("hflip", 2), ("flips", 4)]
    assert json.loads((out / "tta-val.json").read_text()) == json.loads(json.dumps(result))
    images = set()
    for m in modes:
        report = load_report(out / f"val-{m['tta']}")
        assert report.tta == m["tta"] and report.box.map50_95 == m["map50_95"]
        images.add(tuple(json.loads(x)["image"] for x in
                         (out / f"val-{m['tta']}" / "predictions.jsonl").read_text().splitlines()))
    assert len(images) == 1  # the same sample of scans for every mode
    plain = evaluate(onnx_model, data, max_images=5, latency_samples=2, plots=False)
    assert (modes[0]["map50"], modes[0]["map50_95"]) == (plain.box.map50, plain.box.map50_95)
    table = capsys.readouterr().out.strip().splitlines()[-5:]
    assert table[0].startswith("| TTA | model calls |") and len(table) == 5
    assert table[3].startswith("| hflip | 2 |") and table[4].startswith("| flips | 4 |")
    assert f"{modes[2]['map50_95'] - modes[0]['map50_95']:+.3f})" in table[4]
    assert (tmp_path / "tta.png").stat().st_size > 20_000
    # the plot is redrawn from the saved reports alone
    assert script.main([str(onnx_model), str(data), "--out", str(out), "--plot", str(tmp_path / "again.png"),
                        "--plot-only"]) == {}
    assert (tmp_path / "again.png").stat().st_size > 20_000
