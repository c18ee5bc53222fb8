"""RegistryModelSource: what the server polls to follow the champion."""

from __future__ import annotations

import pytest

from xraydet.registry import RegistryError, RegistryModelSource, register_model
from xraydet.registry.store import client, set_champion
from xraydet.serving.model_source import ModelRef, ModelSource, source_for


def test_source_follows_the_champion(registry_home, tiny_model, trigger_happy_model):
    register_model(tiny_model, "xray")
    register_model(trigger_happy_model, "xray")
    source = source_for("models:/xray@champion")
    assert isinstance(source, RegistryModelSource) and isinstance(source, ModelSource)
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        source.current()  # nothing served yet: the error reaches the server, which stays unhealthy

    set_champion("xray", "1", [])
    ref = source.current()
    assert isinstance(ref, ModelRef) and (ref.name, ref.version) == ("xray", "1")
    assert ref.weights.read_bytes() == tiny_model.read_bytes()
    assert source.current() is ref  # unchanged champion: no new download, same ref

    set_champion("xray", "2", ["1"])
    ref2 = source.current()
    assert ref2.version == "2" and ref2.weights.name == trigger_happy_model.name

    # The alias disappears (or the store is unreachable): keep serving the last known version.
    client().delete_registered_model_alias("xray", "champion")
    assert source.current() == ref2


def test_source_prefers_the_registered_onnx_export(registry_home, tiny_model, tmp_path):
    weights = tmp_path / "best.pt"
    weights.write_bytes(tiny_model.read_bytes())
    weights.with_suffix(".onnx").write_bytes(b"exported")
    register_model(weights, "xray")
    set_champion("xray", "1", [])
    assert RegistryModelSource("xray", prefer_onnx=True).current().weights.name == "best.onnx"
    assert RegistryModelSource("xray").current().weights.name == "best.pt"
    assert RegistryModelSource("xray", alias="champion").describe() == "models:/xray@champion"
