"""eval compare's output folder: every model reference is checked before any is evaluated, and the folder
is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from xraydet.errors import XrayDetError
from xraydet.evaluation.compare import compare_models
from xraydet.evaluation.report import load_report


def test_a_comparison_is_replaced_whole_or_not_at_all(onnx_model: Path, tiny_model: Path, tmp_path: Path):
    data, out = tiny_model.parents[2] / "data" / "data.yaml", tmp_path / "cmp"  # its own data
    compare_models([onnx_model, onnx_model], data, n=3, out_dir=out)
    before = (out / "comparison.json").read_bytes()
    assert sorted(p.name for p in (out / "models").iterdir()) == ["01_tiny.onnx", "02_tiny.onnx"]
    # a missing model is found before any model is evaluated
    with pytest.raises(XrayDetError, match=r"missing\.pt"):
        compare_models([onnx_model, tmp_path / "missing.pt"], data, n=3, out_dir=out)
    # a model that fails while loading, after the first was evaluated: the earlier comparison stays whole
    not_a_model = tmp_path / "scan.pt"
    not_a_model.write_bytes(b"not a checkpoint")
    with pytest.raises(XrayDetError, match=r"scan\.pt"):
        compare_models([onnx_model, not_a_model], data, n=3, out_dir=out)
    assert (out / "comparison.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp", "scan.pt"]  # no half-made folder left
    # a shorter comparison leaves only its own model folders
    cmp = compare_models([onnx_model], data, n=3, out_dir=out)
    assert [p.name for p in (out / "models").iterdir()] == ["01_tiny.onnx"]
    assert cmp.rows[0].report_dir == str(out / "models" / "01_tiny.onnx")
    assert load_report(out / "models" / "01_tiny.onnx").n_images == 3
