"""Wrong input to `xraydet eval` / `eval compare` / `review` / `export`: refused before any work, with an
error naming the flag or file (the CLI prints XrayDetError as one line, exit 2), never a traceback or lost
files."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.evaluation.cases import LabelPredictor
from typer.testing import CliRunner

from xraydet.errors import ConfigError, XrayDetError
from xraydet.evaluation import evaluate


def _app():
    from xraydet.cli.main import app

    return app


def _invoke(*args: object, width: int = 200):
    return CliRunner().invoke(_app(), [str(a) for a in args], terminal_width=width)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ----------------------------------------------------------------------------------------- --out folders
def test_eval_out_must_be_new_empty_or_an_earlier_report(labelled_folder: Path, tmp_path: Path):
    predictor = LabelPredictor(labelled_folder)
    data_dir = labelled_folder.parent
    before = _tree(data_dir)
    with pytest.raises(XrayDetError, match=r"not an earlier evaluation report \(no report.json\)") as err:
        evaluate(predictor, labelled_folder, out_dir=data_dir, latency_samples=1, plots=False)
    assert str(data_dir) in str(err.value)
    assert _tree(data_dir) == before  # the data set is untouched
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(XrayDetError, match="exists and is not a folder"):
        evaluate(predictor, labelled_folder, out_dir=a_file, latency_samples=1, plots=False)
    assert a_file.read_text() == "keep me"
    # what is accepted: a new folder, an empty one, an earlier report (replaced)
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty, empty):  # the third run replaces the report of the second
        evaluate(predictor, labelled_folder, out_dir=out, latency_samples=1, plots=False)
        assert (out / "report.json").is_file()


def test_compare_refuses_a_file_or_foreign_folder_as_out(labelled_folder: Path, tmp_path: Path):
    a_file = tmp_path / "cmp.txt"
    a_file.write_text("x")
    data_dir = labelled_folder.parent
    before = _tree(data_dir)
    for out in (a_file, data_dir):
        result = _invoke("eval", "compare", tmp_path / "a.pt", "--dataset", labelled_folder, "--out", out)
        assert isinstance(result.exception, XrayDetError), result.output
        assert str(out) in str(result.exception) and "comparison" in str(result.exception)
    assert _tree(data_dir) == before and a_file.read_text() == "x"


# ----------------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "args",
    [
        ["eval", "m.pt", "d", "--backend", "tensorrt"],
        ["eval", "compare", "m.pt", "--dataset", "d", "--backend", "tensorrt"],
    ],
)
def test_unknown_backend_is_a_usage_error_listing_the_choices(args: list[str]):
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert "--backend" in result.output and "ultralytics" in result.output


def test_library_refuses_an_unknown_backend_with_a_config_error(labelled_folder: Path, tmp_path: Path):
    from xraydet.inference import load_predictor

    weights = tmp_path / "m.onnx"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="--backend tensorrt: unknown backend; choose one of auto, onnx"):
        load_predictor(weights, backend="tensorrt")
    with pytest.raises(ConfigError, match="--backend"):
        evaluate(LabelPredictor(labelled_folder), labelled_folder, backend="tensorrt")


def test_an_unusable_device_is_named(labelled_folder: Path, tmp_path: Path):
    weights = tmp_path / "m.pt"
    weights.write_bytes(b"junk")
    result = _invoke("eval", weights, labelled_folder, "--device", "cuda:99", "--out", tmp_path / "rep")
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception).startswith("--device cuda:99: not usable here")


def test_a_corrupt_checkpoint_is_named_not_a_traceback(labelled_folder: Path, tmp_path: Path):
    from xraydet.inference import load_predictor
    from xraydet.inference.export import checkpoint_info

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk\n")
    for load in (load_predictor, checkpoint_info):
        with pytest.raises(XrayDetError, match=r"junk.pt: not a readable Ultralytics checkpoint \("):
            load(junk)
    for args in (["eval", junk, labelled_folder, "--out", tmp_path / "rep"], ["export", junk]):
        result = _invoke(*args)
        assert isinstance(result.exception, XrayDetError), result.output
        assert "not a readable Ultralytics checkpoint" in str(result.exception)
    assert not (tmp_path / "rep").exists() and not junk.with_suffix(".onnx").exists()


# ----------------------------------------------------------------------------------------- help, names
def _help(*command: str) -> str:
    """The help text with the panel borders and line wraps taken out."""
    output = CliRunner().invoke(_app(), [*command, "--help"], env={"COLUMNS": "250"}).output
    return " ".join(output.replace("│", " ").split())


def test_help_keeps_the_default_text_of_options():
    eval_help = _help("eval", "run")
    assert "[default: eval_reports/<model>-<split>]" in eval_help
    assert "[default: the model's]" in eval_help
    assert "[default: each model's]" in _help("eval", "compare")
    gate_help = _help("gate")
    assert "[default: the seed's policy]" in gate_help and "[default: REPORT_DIR/review]" in gate_help


def test_default_report_folder_names_tell_references_apart():
    from xraydet.cli.evaluate import default_report_dir

    names = {
        ref: default_report_dir(ref, "val")
        for ref in ("runs/x/best.pt", "http://127.0.0.1:18811", "https://host/api/", "xr/2", "other/2", "xr")
    }
    assert {ref: p.name for ref, p in names.items()} == {
        "runs/x/best.pt": "best-val",
        "http://127.0.0.1:18811": "127.0.0.1-18811-val",
        "https://host/api/": "host-api-val",
        "xr/2": "xr-2-val",
        "other/2": "other-2-val",
        "xr": "xr-val",
    }
    assert all(p.parent == Path("eval_reports") for p in names.values())
    assert default_report_dir("xr/2", "../up").name == "xr-2-up"  # a split name cannot climb out either


def test_review_of_a_missing_report_prints_only_the_error(tmp_path: Path):
    result = _invoke("review", tmp_path / "nonexist")
    assert isinstance(result.exception, XrayDetError)
    assert "nonexist" in str(result.exception)
    assert "review 100 predictions" not in result.output  # no banner for a server that never starts
