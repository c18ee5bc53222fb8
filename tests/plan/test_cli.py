"""``xraydet plan validate | status | resume`` through typer's test runner (on an app of its own)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from xraydet.cli import plan as plan_cli
from xraydet.cli.plan import register
from xraydet.plan import PlanError, parse_plan, plan_status, run_plan

app = typer.Typer()
register(app)
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables are not wrapped at 80 columns, so rows can be read back."""
    monkeypatch.setattr(plan_cli.console, "width", 200)


def test_validate_lists_the_steps_of_a_shipped_plan() -> None:
    result = runner.invoke(app, ["plan", "validate", "seed-improvement-plan"])
    assert result.exit_code == 0, result.output
    assert "plan seed-improvement-plan: valid" in result.output
    assert "if status == 'stopped' -> merge-cargo" in result.output
    assert "phases[1].prepare[0]" in result.output  # merge-cargo sits in Phase 2's preparation


def test_validate_reports_bad_keys_with_their_path(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "validate",
            "cpu-demo",
            "--set",
            "phases.phase1.job.epochs=0",
            "--set",
            "evaluation.via=fax",
        ],
    )
    assert isinstance(result.exception, PlanError)
    assert result.exception.problems == [
        "phases[0].job: key 'epochs': Input should be greater than or equal to 1",
        "evaluation.via: Input should be 'api', 'onnx' or 'pt'",
    ]


@pytest.mark.usefixtures("test_kinds")
def test_status_and_resume_show_every_step(tmp_path: Path) -> None:
    plan = parse_plan(
        {
            "name": "fake-cli",
            "data": [
                {
                    "id": "first",
                    "kind": "score",
                    "value": 0.2,
                    "transitions": [
                        {"when": {"metric": "final.map50", "op": "<", "value": 0.3}, "goto": "third"}
                    ],
                },
                {"id": "second", "kind": "score", "value": 0.9},
                {"id": "third", "kind": "score", "value": 0.5},
            ],
        }
    )
    run_plan(plan, tmp_path)
    status = runner.invoke(app, ["plan", "status", str(tmp_path)])
    assert status.exit_code == 0, status.output
    rows = {
        line.split("│")[1].split()[0]: line for line in status.output.splitlines() if line.startswith("│")
    }
    assert "third" in rows["first"] and "pending" in rows["second"] and "done" in rows["third"]
    resumed = runner.invoke(app, ["plan", "resume", str(tmp_path)])
    assert resumed.exit_code == 0, resumed.output
    assert "first: already done (outputs intact)" in resumed.output


def test_status_shows_the_doctor_steps_key_numbers(
    synth_yaml: Path, tmp_path: Path, xraydet_home: Path
) -> None:
    plan = parse_plan(
        {"name": "doctor-only", "data": [{"id": "doctor-main", "kind": "doctor", "dataset": str(synth_yaml)}]}
    )
    run_plan(plan, tmp_path / "state")  # tmp_path holds the data set: a state dir must be new or empty
    record = plan_status(tmp_path / "state").records["doctor-main"]
    values = record.decisions[0]["values"]  # what the doctor measured, as the decision log shows it
    status = runner.invoke(app, ["plan", "status", str(tmp_path / "state")])
    assert status.exit_code == 0, status.output
    row = next(line for line in status.output.splitlines() if line.startswith("│ doctor-main"))
    assert record.outcome["verdict"] in row
    assert f"{values['images']} images" in row and f"{values['boxes']} boxes" in row
    assert f"contrast {values['given_contrast']:.3f}" in row
