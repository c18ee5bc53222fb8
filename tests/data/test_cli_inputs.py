"""Wrong input to the `xraydet data` commands: refused with an error naming the flag or file (exit 2 from the
CLI), never a traceback, and never a lost or half-written output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xraydet.errors import ConfigError, XrayDetError


def _invoke(*args: object):
    from xraydet.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


# ----------------------------------------------------------------------------------------------- doctor
def test_doctor_out_replaces_an_earlier_doctor_folder_whole(synth_yaml: Path, tmp_path: Path) -> None:
    from xraydet.data.doctor import doctor

    out = tmp_path / "doc"
    first = doctor(synth_yaml, out_dir=out, max_images=20)
    stale = out / "contact_sheets" / "stale.png"
    stale.write_bytes(b"from an earlier run")
    report = doctor(synth_yaml, out_dir=out, max_images=20)
    # written as one folder and swapped in: nothing of the earlier run is left behind
    assert not stale.exists()
    assert report.contact_sheets == first.contact_sheets
    assert all(Path(p).is_file() for p in report.contact_sheets)
    assert report.plot == str(out / "scores.png") and Path(report.plot).is_file()
    assert json.loads((out / "doctor.json").read_text())["contact_sheets"] == report.contact_sheets
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_doctor_refuses_an_out_that_is_not_a_doctor_folder(synth_yaml: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "doc.txt"
    a_file.write_text("keep")
    data_dir = synth_yaml.parent
    before = sorted(p.name for p in data_dir.iterdir())
    for out, why in ((a_file, "exists and is not a folder"), (data_dir, r"not an earlier doctor output")):
        result = _invoke("data", "doctor", synth_yaml, "--out", out)
        assert isinstance(result.exception, XrayDetError), result.output
        assert str(out) in str(result.exception)
        with pytest.raises(XrayDetError, match=why):
            raise result.exception
    assert a_file.read_text() == "keep" and sorted(p.name for p in data_dir.iterdir()) == before


@pytest.mark.parametrize(
    "args",
    [
        ["data", "doctor", "d", "--max-images", "-5"],
        ["data", "doctor", "d", "--probe-epochs", "0"],
        ["data", "check", "d", "--workers", "-1"],
        ["data", "check", "d", "--limit", "-1"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(args: list[str]) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert args[-2] in result.output


def test_doctor_library_refuses_a_non_positive_sample(synth_yaml: Path) -> None:
    from xraydet.data.doctor import doctor

    with pytest.raises(ConfigError, match="--max-images"):
        doctor(synth_yaml, max_images=0)


# ------------------------------------------------------------------------------------------------ check
def test_check_json_out_must_be_a_file_path(synth_yaml: Path, tmp_path: Path) -> None:
    result = _invoke("data", "check", synth_yaml, "--json-out", tmp_path)
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception).startswith(f"--json-out {tmp_path}: is a folder")


# ------------------------------------------------------------------------------------------ synth, merge
def test_synth_errors_name_the_flag_as_typed(tmp_path: Path) -> None:
    result = _invoke("data", "synth", "-o", tmp_path / "s", "--format", "gif")
    assert isinstance(result.exception, ConfigError), result.output
    assert "--format: Input should be 'jpg' or 'png'" in str(result.exception)
    assert "--image-format" not in str(result.exception)


def test_a_map_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    from xraydet.data.merge import load_map_file

    map_file = tmp_path / "map.yaml"
    map_file.write_bytes(b"rename:\n  Messer: couteau \xe0 pain\n")
    with pytest.raises(ConfigError, match=r"map.yaml: not UTF-8 text \(byte 26\)"):
        load_map_file(map_file)


@pytest.mark.parametrize("command", ["split", "doctor"])
def test_negative_seed_is_a_usage_error_not_a_traceback(command: str, yolo_set, tmp_path: Path) -> None:
    """numpy's default_rng(-1) raised ValueError: the CLI printed a traceback (split, doctor's sample)."""
    data_yaml = yolo_set("s", ["knife"], {"train": {f"a{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(6)}})
    extra = ["-o", tmp_path / "out"] if command == "split" else ["--max-images", 1, "--split", "train"]
    result = _invoke("data", command, data_yaml, "--seed", -1, *extra)
    assert result.exit_code == 2 and not isinstance(result.exception, ValueError)
    assert "--seed" in result.output and not (tmp_path / "out").exists()


def test_split_api_refuses_a_negative_seed(yolo_set, tmp_path: Path) -> None:
    from xraydet.data.split import split_dataset

    data_yaml = yolo_set("s", ["knife"], {"train": {f"a{i}": ["0 0.5 0.5 0.2 0.2"] for i in range(6)}})
    with pytest.raises(ConfigError, match=r"--seed -1: must be >= 0"):
        split_dataset(data_yaml, tmp_path / "out", val=0.5, seed=-1)
