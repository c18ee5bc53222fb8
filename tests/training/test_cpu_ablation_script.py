"""benchmarks/cpu_ablation.py keeps working: two settings train through `xraydet train` side by side on a tiny
set, and the report holds each one's validations, losses and curves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_ablation.py"


def test_two_settings_train_and_are_reported(
    synth_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XRAYDET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--data", str(synth_yaml), "--out", str(out)]
    cmd += ["--n-train", "8", "--every", "1", "--epochs", "2", "--val-every", "1", "--only", "recipe", "both"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["recipe", "both"]
    assert summary["both"]["xray_augment"] == {"rot90": 0.5, "threat_projection": 0.5}
    for setting in summary.values():
        assert [v["epoch"] for v in setting["validations"]] == [1, 2]
        assert all(v["train_box_loss"] > 0 for v in setting["validations"])
    assert (out / "cpu-ablation.png").stat().st_size > 10_000
    assert "| both |" in proc.stdout
    jobs = {p.name for p in out.glob("job-*.yaml")}
    assert jobs == {"job-recipe.yaml", "job-both.yaml"}
