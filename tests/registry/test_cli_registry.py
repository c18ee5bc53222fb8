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


def _junk_weights(tmp_path):
    weights = tmp_path / "junk.pt"
    weights.write_bytes(b"not a checkpoint, but registering only hashes and stores it")
    return weights


def test_cli_champion_exits_1_without_a_champion_with_or_without_path(cli, registry_home, tmp_path):
    assert cli("registry", "register", _junk_weights(tmp_path), "--name", "xr").exit_code == 0
    for args in (["registry", "champion", "xr"], ["registry", "champion", "xr", "--path"]):
        result = cli(*args)
        assert result.exit_code == 1 and "no champion yet" in result.output, args


def test_cli_register_into_an_unknown_run_names_it(cli, registry_home, tmp_path):
    result = cli("registry", "register", _junk_weights(tmp_path), "--name", "xr", "--run-id", "deadbeef")
    assert isinstance(result.exception, RegistryError), result.output
    assert str(result.exception).startswith("--run-id deadbeef: no such MLflow run")


def test_cli_promote_refuses_bad_backend_and_foreign_out_before_evaluating(cli, registry_home, tmp_path):
    from xraydet.errors import XrayDetError

    assert cli("registry", "register", _junk_weights(tmp_path), "--name", "xr").exit_code == 0
    result = cli("registry", "promote", "xr", "1", "--dataset", tmp_path, "--backend", "tensorrt")
    assert result.exit_code == 2 and "--backend" in result.output, result.output
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep")
    for out in (victim, victim / "notes.txt"):
        result = cli("registry", "promote", "xr", "1", "--dataset", tmp_path, "--out", out)
        assert isinstance(result.exception, XrayDetError), result.output
        assert str(out) in str(result.exception) and "promotion folder" in str(result.exception)
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_cli_promote_json_with_an_onnx_export_keeps_stdout_pure_json(registry_home, tiny_model, tmp_path):
    """--backend onnx exports the .pt through Ultralytics, which logs to stdout: with --json, to stderr."""
    import os
    import subprocess
    import sys

    from xraydet.evaluation.gate import GatePolicy

    policy = tmp_path / "lenient.yaml"
    policy.write_text(yaml.safe_dump(dict.fromkeys(GatePolicy.model_fields)))
    data = tiny_model.parents[2] / "data" / "data.yaml"  # what the tiny model was trained on
    env = {**os.environ, "XRAYDET_CACHE_DIR": str(tmp_path / "cache")}

    def xraydet(*args):
        cmd = [sys.executable, "-m", "xraydet.cli.main", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)

    assert xraydet("registry", "register", tiny_model, "--name", "xr").returncode == 0
    proc = xraydet("registry", "promote", "xr", "1", "--dataset", data, "--max-images", 2, "--policy", policy,
                   "--backend", "onnx", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["decision"] == "promoted"  # nothing but the JSON
    assert "ONNX" in proc.stderr  # the export happened, and its log went to stderr
