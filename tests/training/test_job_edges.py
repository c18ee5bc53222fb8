"""Edge cases of job files: keys written twice, gate thresholds a fraction metric cannot meet, `--run-dir`
pointing at a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from xraydet.errors import ConfigError
from xraydet.training import load_job, load_preset


@pytest.mark.usefixtures("data_yaml")
def test_a_key_written_twice_in_a_job_is_an_error_with_its_line(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently: a 200-epoch job would train for 2."""
    path = tmp_path / "job.yaml"
    path.write_text("data: data.yaml\nepochs: 200\nimgsz: 64\nepochs: 2\n")
    with pytest.raises(
        ConfigError, match=r"job\.yaml:4: not valid YAML: duplicate key 'epochs' \(first at line 2\)"
    ):
        load_job(path)


def test_a_key_written_twice_in_a_preset_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("args:\n  lr0: 0.01\n  lr0: 0.5\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml:3: not valid YAML: duplicate key 'lr0'"):
        load_preset(path)


@pytest.mark.usefixtures("data_yaml")
def test_merge_keys_in_a_job_still_work(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("data: data.yaml\noverrides:\n  <<: {lr0: 0.01, mosaic: 0.5}\n  lr0: 0.02\n")
    assert load_job(path).overrides == {"lr0": 0.02, "mosaic": 0.5}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("gate.continue_above=1.5", r"key 'gate.continue_above': Input should be less than or equal to 1"),
        ("gate.continue_above=.inf", r"key 'gate.continue_above': Input should be less than or equal to 1"),
        ("gate.continue_above=.nan", r"key 'gate.continue_above'"),
        ("gate.stop_below=-0.1", r"key 'gate.stop_below': Input should be greater than or equal to 0"),
    ],
    ids=["above-1", "inf", "nan", "negative"],
)
def test_gate_thresholds_are_fractions(tmp_path: Path, data_yaml: Path, setting: str, message: str) -> None:
    """mAP, precision and recall lie in 0-1: past 1 the gate never continues, NaN makes it always warn."""
    with pytest.raises(ConfigError, match=message):
        load_job(_job(tmp_path, data_yaml), [setting])


def test_gate_thresholds_may_be_0_and_1(tmp_path: Path, data_yaml: Path) -> None:
    job = load_job(_job(tmp_path, data_yaml), ["gate.stop_below=0", "gate.continue_above=1"])
    assert (job.gate.stop_below, job.gate.continue_above) == (0, 1)


def test_run_dir_that_is_a_file_is_an_error_not_a_traceback(
    tmp_path: Path, data_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xraydet.training
    from xraydet.cli.main import app

    started: list[Any] = []
    monkeypatch.setattr(xraydet.training, "run_training", lambda *a, **k: started.append(a))
    (tmp_path / "taken").write_text("a file\n")
    result = CliRunner().invoke(
        app, ["train", str(_job(tmp_path, data_yaml)), "--run-dir", str(tmp_path / "taken")]
    )
    assert isinstance(result.exception, ConfigError), result.output
    assert "--run-dir" in str(result.exception) and "not a folder" in str(result.exception)
    assert started == []


def _job(tmp_path: Path, data_yaml: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(f"data: {data_yaml}\nepochs: 1\nimgsz: 64\n")
    return path
