"""Config files and options a person gets wrong, across commands: each is one error naming the file, byte or
flag (the CLI prints XrayDetError as one line with exit 2; typer's own usage errors exit 2 too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xraydet.errors import ConfigError

LATIN1 = b"# r\xe9glages\nmin_map50: 0.5\n"  # "réglages" saved as Latin-1: byte 3 is not UTF-8


def _invoke(*args: object, **kw: object):
    from xraydet.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- not UTF-8
def test_a_config_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    from xraydet.config import read_yaml_mapping
    from xraydet.evaluation.gate import load_policy
    from xraydet.plan import load_plan
    from xraydet.training.job import load_job

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(LATIN1)
    for load in (read_yaml_mapping, load_policy, load_plan, load_job):
        with pytest.raises(ConfigError, match=r"bad.yaml: not UTF-8 text \(byte 3\)"):
            load(bad)


@pytest.mark.parametrize(
    "args",
    [["train", "{bad}"], ["plan", "validate", "{bad}"], ["gate", "{dir}", "--policy", "{bad}"]],
)
def test_cli_reports_a_non_utf8_file_as_an_input_error(tmp_path: Path, args: list[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(LATIN1)
    result = _invoke(*(a.format(bad=bad, dir=tmp_path) for a in args))
    assert isinstance(result.exception, ConfigError), result.output
    assert "not UTF-8 text (byte 3)" in str(result.exception)


# ------------------------------------------------------------------------------------------- options
def test_serve_log_level_is_one_of_uvicorns() -> None:
    result = _invoke("serve", "--model", "m.onnx", "--log-level", "foo")
    assert result.exit_code == 2, result.output
    assert "--log-level" in result.output and "debug" in result.output


def test_a_model_level_error_is_printed_without_a_flag(tmp_path: Path) -> None:
    """A check of the options together has no field: it printed as ``(--: Value error, ...)``."""
    from pydantic import BaseModel, ValidationError, model_validator

    from xraydet.config import validation_problems

    result = _invoke("data", "synth", "--out", tmp_path / "x", "--n-train", 0, "--n-val", 0)
    assert isinstance(result.exception, ConfigError), result.output
    assert str(result.exception) == "invalid synth options (Value error, n_train + n_val must be at least 1)"
    assert not (tmp_path / "x").exists()

    class Opts(BaseModel):
        low: int
        high: int

        @model_validator(mode="after")
        def _ordered(self) -> Opts:
            if self.low > self.high:
                raise ValueError("low must not exceed high")
            return self

    with pytest.raises(ValidationError) as err:
        Opts(low=2, high=1)
    assert validation_problems(err.value) == "Value error, low must not exceed high"  # was "root: ..."
    with pytest.raises(ValidationError) as err:
        Opts(low="a", high=1)  # type: ignore[arg-type]
    assert validation_problems(err.value, as_flags=True).startswith("--low: Input should be a valid integer")


def test_plan_help_lists_every_shipped_plan() -> None:
    from xraydet.plan import bundled_plans

    for command in ("run", "validate"):
        output = _invoke("plan", command, "--help", env={"COLUMNS": "250"}).output
        text = " ".join(output.replace("│", " ").split())
        assert set(bundled_plans()) >= {"cpu-demo", "xray-fast-gpu"}
        for name in bundled_plans():
            assert name in text, (command, name)


# ------------------------------------------------------------------------------------------- plan status
def test_deploy_headline_says_no_champion_rather_than_v_none() -> None:
    from xraydet.plan.decisions import headline
    from xraydet.plan.state import StepRecord

    kept = StepRecord(
        id="deploy", kind="deploy", outcome={"action": "kept", "version": "1", "champion_after": None}
    )
    assert headline(kept) == "kept v1 (no champion)"
    promoted = StepRecord(
        id="deploy", kind="deploy", outcome={"action": "promoted", "version": "2", "champion_after": "2"}
    )
    assert headline(promoted) == "promoted v2 (champion: v2)"
