"""A new user's mistakes on the command line: each ends with one error naming the path or option (exit 2),
never a traceback, and leaves nothing written where the output would have gone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

SYNTH = ["--n-train", "2", "--n-val", "1", "--imgsz", "64"]


def _invoke(*args: object):
    from xraydet.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object
) -> tuple[int, str]:
    """Run ``xraydet ARGS`` through ``main()`` (as the console script does); the exit status and stderr."""
    from xraydet.cli.main import main

    monkeypatch.setattr(sys, "argv", ["xraydet", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(exit_info.value.code or 0), " ".join(err.split())  # one line: rich wraps at 80 columns


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------- errors print paths as they are
@pytest.mark.parametrize("name", ["scans[/old]", "scans[bold]v2"])
def test_an_error_names_a_path_with_brackets_as_typed(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # rich read "[/old]" as a closing tag (MarkupError traceback), "[bold]" as a style (dropped from the path)
    code, err = _main(monkeypatch, capsys, "data", "check", tmp_path / name)
    assert code == 2
    assert f"{tmp_path / name}: no such file or folder" in err


def test_a_written_path_with_brackets_is_printed_as_typed(synth_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "split[/v2]"
    result = _invoke("data", "split", synth_yaml, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out / 'data.yaml'}" in " ".join(result.output.split())


# ------------------------------------------------------------------------------ file-system errors
def test_a_file_where_a_folder_is_needed_is_an_error_not_a_traceback(
    synth_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    note = tmp_path / "notes.txt"
    note.write_text("keep")
    code, err = _main(monkeypatch, capsys, "data", "check", synth_yaml, "--json-out", note / "report.json")
    assert code == 2
    assert f"{note}: is a file, where a folder is needed" in err
    assert note.read_text() == "keep"


def test_a_permission_error_names_the_file_not_its_temp_copy(
    synth_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import xraydet.io

    def denied(path: Path, obj: object) -> Path:
        raise PermissionError(13, "Permission denied", str(tmp_path / ".report.json.k2j4_x9a.tmp"))

    monkeypatch.setattr(xraydet.io, "atomic_write_json", denied)
    code, err = _main(
        monkeypatch, capsys, "data", "check", synth_yaml, "--json-out", tmp_path / "report.json"
    )
    assert code == 2
    assert f"cannot write {tmp_path / 'report.json'}: Permission denied" in err


# ------------------------------------------------------------- --overwrite replaces folders, not files
@pytest.mark.parametrize("command", ["synth", "split", "merge", "convert"])
def test_overwrite_never_replaces_a_file_with_a_folder(
    command: str, synth_yaml: Path, tmp_path: Path
) -> None:
    note = tmp_path / "notes.txt"
    note.write_text("keep")
    coco = tmp_path / "coco.json"
    coco.write_text('{"images": [], "annotations": [], "categories": []}')
    args = {
        "synth": ["data", "synth", *SYNTH],
        "split": ["data", "split", synth_yaml],
        "merge": ["data", "merge", synth_yaml],
        "convert": ["data", "convert", coco, "--from", "coco"],
    }[command]
    result = _invoke(*args, "--out", note, "--overwrite")
    assert result.exit_code == 1 and "is not a folder" in str(result.exception), result.output
    assert str(note) in str(result.exception)
    assert note.read_text() == "keep"
    assert _listing(tmp_path) == ["coco.json", "notes.txt"]  # no .notes.txt.old, no partial folder


def test_export_refuses_an_out_that_is_not_an_onnx_file(tmp_path: Path) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    for out, why in ((weights, "ending in .onnx"), (tmp_path, "is a folder")):
        result = _invoke("export", weights, "--out", out)
        assert result.exit_code == 1 and why in str(result.exception), result.output
    assert weights.read_bytes() == b"weights" and _listing(tmp_path) == ["best.pt"]


def test_api_test_refuses_a_folder_as_out_before_calling_the_api(synth_yaml: Path, tmp_path: Path) -> None:
    # the URL is never reached: the folder is refused first (it failed only after the whole run)
    result = _invoke(
        "api-test", "--api-url", "http://127.0.0.1:9", "--dataset", synth_yaml, "--out", tmp_path
    )
    assert result.exit_code == 1 and "is a folder" in str(result.exception), result.output
    assert str(tmp_path) in str(result.exception)


# -------------------------------------------------------------------------------- option values
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["eval", "m.pt", "d", "--imgsz", "0"], "--imgsz"),
        (["eval", "m.pt", "d", "--imgsz", "-64"], "--imgsz"),
        (["eval", "compare", "m.pt", "--dataset", "d", "--imgsz", "0"], "--imgsz"),
        (["review", "r", "--port", "70000"], "--port"),
        (["review", "r", "--port", "-1"], "--port"),
        (["registry", "promote", "xr", "abc", "--dataset", "d"], "version"),
        (["registry", "promote", "xr", "0", "--dataset", "d"], "version"),
        (["gate", "r", "--review-dir", "no-such-review"], "--review-dir"),
        (["registry", "promote", "xr", "1", "--review-dir", "no-such-review"], "--review-dir"),
        (
            ["data", "convert", "a.json", "--from", "coco", "--out", "o", "--images", "no-such-folder"],
            "--images",
        ),
    ],
)
def test_out_of_range_or_missing_values_are_usage_errors(
    args: list[str], flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert flag in result.output
    assert _listing(tmp_path) == []
