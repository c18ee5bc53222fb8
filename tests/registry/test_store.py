"""Registering, listing and resolving models on a real MLflow SQLite store."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from xraydet.registry import (
    RegistryError,
    list_models,
    list_versions,
    register_model,
    resolve_model,
    resolve_version,
)
from xraydet.registry.refs import cache_dir
from xraydet.registry.store import client, set_champion


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_register_two_versions_and_resolve_every_ref_form(registry_home, tiny_model, trigger_happy_model):
    v1 = register_model(tiny_model, "xray")
    v2 = register_model(trigger_happy_model, "xray")
    assert (v1, v2) == ("1", "2")

    versions = list_versions("xray")
    assert [v.version for v in versions] == ["1", "2"]
    assert versions[0].sha256 == sha(tiny_model) and versions[1].sha256 == sha(trigger_happy_model)
    assert versions[0].weights == tiny_model.name
    assert versions[0].run_id and versions[0].run_id != versions[1].run_id

    with pytest.raises(RegistryError, match=r"no alias 'champion'.*promote"):
        resolve_model("xray")
    set_champion("xray", "2", ["1"])
    assert list_versions("xray")[1].aliases == ["champion"]
    model = list_models()[0]
    summary = (model.name, model.champion, model.latest, model.n_versions, model.history)
    assert summary == ("xray", "2", "2", 2, ["1"])

    expected = {"xray": trigger_happy_model, "xray@champion": trigger_happy_model,
                "models:/xray@champion": trigger_happy_model, "xray/1": tiny_model,
                "models:/xray/1": tiny_model, "xray/latest": trigger_happy_model}
    for ref, original in expected.items():
        path = resolve_model(ref)
        assert path.is_file(), ref
        assert sha(path) == sha(original), ref
        assert path.is_relative_to(registry_home / "runs" / "model-cache" / "xray"), ref
        assert path != original


def test_cache_is_reused_and_a_corrupt_copy_is_replaced(registry_home, tiny_model):
    register_model(tiny_model, "xray")
    path = resolve_model("xray/1")
    assert path.parent == cache_dir("xray", "1")
    mtime = path.stat().st_mtime_ns
    assert resolve_model("xray/1") == path
    assert path.stat().st_mtime_ns == mtime  # reused, not downloaded again
    path.write_bytes(b"truncated")
    again = resolve_model("xray/1")
    assert sha(again) == sha(tiny_model)
    assert not [p for p in again.parent.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_corrupt_artifact_store_is_detected(registry_home, tiny_model, tmp_path):
    weights = tmp_path / "w" / "best.pt"
    weights.parent.mkdir()
    shutil.copy2(tiny_model, weights)
    register_model(weights, "xray")
    stored = next((registry_home / "runs" / "mlartifacts").rglob("best.pt"))
    stored.write_bytes(stored.read_bytes()[:-100])  # someone damaged the artifact store
    with pytest.raises(RegistryError, match="does not match its registered sha256"):
        resolve_model("xray/1")
    assert not cache_dir("xray", "1").exists()


def test_onnx_beside_weights_and_report_are_registered(registry_home, tiny_model, tiny_report, tmp_path):
    weights = tmp_path / "w" / "best.pt"
    weights.parent.mkdir()
    shutil.copy2(tiny_model, weights)
    weights.with_suffix(".onnx").write_bytes(b"onnx bytes")  # content is not inspected at registration
    version = register_model(weights, "xray", report=tiny_report)
    info = list_versions("xray")[0]
    report = json.loads((tiny_report / "report.json").read_text())
    assert info.tags["onnx"] == "best.onnx"
    assert info.metrics["map50"] == pytest.approx(report["box"]["map50"], abs=1e-5)
    tdr = report["screening"]["threat_detection_rate"]
    assert info.metrics["threat_detection_rate"] == pytest.approx(tdr, abs=1e-5)
    assert info.tags["eval.n_images"] == str(report["n_images"])
    assert resolve_model(f"xray/{version}", onnx=True).read_bytes() == b"onnx bytes"
    c = client()
    artifacts = {a.path for a in c.list_artifacts(info.run_id, "eval")}
    assert "eval/report.json" in artifacts
    run = c.get_run(info.run_id)
    assert run.data.metrics["eval.map50"] == pytest.approx(report["box"]["map50"], abs=1e-6)
    assert run.info.status == "FINISHED"


def test_register_into_an_existing_training_run(registry_home, tiny_model):
    c = client()
    exp = c.create_experiment("training", artifact_location=(registry_home / "art").as_uri())
    run_id = c.create_run(exp).info.run_id
    version = register_model(tiny_model, "xray", run_id=run_id)
    mv = resolve_version(f"xray/{version}")
    assert mv.run_id == run_id
    assert sha(resolve_model(f"xray/{version}")) == sha(tiny_model)
    with pytest.raises(RegistryError, match="ONNX"):
        resolve_model(f"xray/{version}", onnx=True)


@pytest.mark.parametrize(
    ("setup", "ref", "message"),
    [
        (False, "nope", r"no registered model 'nope' \(known: none registered yet\)"),
        (True, "nope", r"no registered model 'nope' \(known: xray\)"),
        (True, "xray/7", r"has no version 7 \(versions: 1\)"),
        (True, "xray@staging", r"no alias 'staging'"),
        (True, "xray//1", "bad model reference"),
    ],
)
def test_resolve_errors_are_clear(registry_home, tiny_model, setup, ref, message):
    if setup:
        register_model(tiny_model, "xray")
    with pytest.raises(RegistryError, match=message):
        resolve_model(ref)


def test_register_rejects_bad_input(registry_home, tiny_model, tmp_path):
    with pytest.raises(RegistryError, match="weights file not found"):
        register_model(tmp_path / "missing.pt", "xray")
    text = tmp_path / "model.txt"
    text.write_text("x")
    with pytest.raises(RegistryError, match=r"\.pt or \.onnx"):
        register_model(text, "xray")
    with pytest.raises(RegistryError, match="invalid model name"):
        register_model(tiny_model, "x/y")
    with pytest.raises(RegistryError, match="eval report not found"):
        register_model(tiny_model, "xray", report=tmp_path)
    assert list_models() == []  # nothing half-registered
