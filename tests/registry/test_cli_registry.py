"""``xraydet registry ...`` end to end through Typer, on a real SQLite store."""

from __future__ import annotations

import json

import pytest
import typer
import yaml
from typer.testing import CliRunner

from xraydet.cli.registry import register
from xraydet.registry import RegistryError


@pytest.fixture
def cli():
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps "registry" a sub-command even though it is the only group here
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_register_promote_list_rollback(cli, registry_home, tiny_model, eval_args, tmp_path):
    from xraydet.evaluation.gate import GatePolicy

    policy = tmp_path / "lenient.yaml"
    policy.write_text(yaml.safe_dump(dict.fromkeys(GatePolicy.model_fields)))
    for expected in ("1", "2"):
        result = cli("registry", "register", tiny_model, "--name", "xray")
        assert result.exit_code == 0, result.output
        assert f"version {expected}" in result.output

    result = cli("registry", "champion", "xray")
    assert result.exit_code == 1 and "no champion yet" in result.output

    common = ["--dataset", eval_args["dataset"], "--negatives", eval_args["negatives"], "--max-images", 4,
              "--policy", policy]
    result = cli("registry", "promote", "xray", "1", *common)
    assert result.exit_code == 0, result.output
    assert "promoted" in result.output and "no champion yet" in result.output
    result = cli("registry", "promote", "xray", "2", *common, "--json")
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["decision"] == "promoted" and decision["champion_version"] == "1"
    metrics = {c["metric"] for c in decision["comparisons"]}
    assert metrics == {"map50", "threat_detection_rate", "false_alarm_rate"}

    result = cli("registry", "list", "--json")
    assert json.loads(result.stdout)[0] | {"latest": None} == {
        "name": "xray", "champion": "2", "latest": None, "n_versions": 2, "history": ["1"]}
    versions = json.loads(cli("registry", "list", "xray", "--json").output)
    assert [(v["version"], v["aliases"], v["decision"]) for v in versions] == [
        ("1", [], "promoted"), ("2", ["champion"], "promoted")]
    result = cli("registry", "list", "xray")
    assert result.exit_code == 0 and "Versions of xray" in result.output

    result = cli("registry", "rollback", "xray")
    assert result.exit_code == 0 and "v2 -> v1" in result.output
    assert cli("registry", "champion", "xray").output.strip() == "1"
    path = cli("registry", "champion", "xray", "--path").output.strip()
    assert path.endswith(tiny_model.name) and "model-cache" in path

    result = cli("registry", "rollback", "xray")
    assert isinstance(result.exception, RegistryError)  # main() prints it as one line, exit 2


def test_cli_promote_refusal_exits_1(cli, registry_home, tiny_model, eval_args):
    assert cli("registry", "register", tiny_model, "--name", "xray").exit_code == 0
    result = cli("registry", "promote", "xray", "1", "--dataset", eval_args["dataset"], "--max-images", 2)
    assert result.exit_code == 1, result.output
    assert "refused" in result.output and "gate: mAP50 failed" in result.output
