"""Model sources, threat resolution and the holder's swap rules (no server needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xraydet.errors import ConfigError, XrayDetError
from xraydet.serving.model_holder import LoadedModel, ModelHolder
from xraydet.serving.model_source import FileModelSource, ModelRef, ModelSource, source_for
from xraydet.serving.settings import ServeSettings
from xraydet.serving.threats import resolve_threats, sidecar_path

NAMES = ["knife", "gun", "bottle"]


def test_file_source_version_follows_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"model one")
    b.write_bytes(b"model two")
    src = FileModelSource(a)
    assert isinstance(src, ModelSource)
    v1 = src.current()
    assert v1 == ModelRef("a", v1.version, a) and src.current().version == v1.version
    os.replace(b, a)  # replaced in place: same name, new content
    assert src.current().version != v1.version
    c = tmp_path / "c.onnx"
    c.write_bytes(b"model one")
    src.switch(c, name="champion")
    assert src.current() == ModelRef("champion", v1.version, c)  # same bytes, same version
    c.unlink()
    with pytest.raises(XrayDetError, match="not found"):
        src.current()


def test_source_for(tmp_path: Path) -> None:
    weights = tmp_path / "m.onnx"
    weights.write_bytes(b"x")
    assert isinstance(source_for(str(weights)), FileModelSource)
    with pytest.raises(XrayDetError, match="not found"):
        source_for(str(tmp_path / "missing.onnx"))
    registry = pytest.importorskip("xraydet.registry")
    champion = source_for("models:/xray")
    assert isinstance(champion, registry.RegistryModelSource)
    assert (champion.name, champion.alias) == ("xray", "champion")
    assert source_for("xray@challenger").alias == "challenger"


@pytest.mark.parametrize(
    ("sidecar", "metadata", "override", "expected", "source"),
    [
        (None, None, None, NAMES, "default"),
        (None, {"xraydet_threats": ["gun"]}, None, ["gun"], "onnx metadata"),
        (["knife"], {"xraydet_threats": ["gun"]}, None, ["knife"], "sidecar"),
        (["knife"], {"xraydet_threats": ["gun"]}, ["gun", "knife"], ["gun", "knife"], "settings"),
    ],
)
def test_threat_resolution_order(
    tmp_path: Path,
    sidecar: list[str] | None,
    metadata: dict[str, object] | None,
    override: list[str] | None,
    expected: list[str],
    source: str,
) -> None:
    weights = tmp_path / "m.onnx"
    if sidecar is not None:
        sidecar_path(weights).write_text(json.dumps(sidecar))
    threats, where = resolve_threats(weights, NAMES, metadata, override)
    assert threats == expected
    assert where.startswith(source)


def test_unknown_threat_class_names_the_file(tmp_path: Path) -> None:
    weights = tmp_path / "m.onnx"
    sidecar_path(weights).write_text(json.dumps(["knife", "sword"]))
    with pytest.raises(ConfigError, match=r"m\.onnx\.threats\.json.*sword"):
        resolve_threats(weights, NAMES)


def test_a_sidecar_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    weights = tmp_path / "m.onnx"
    sidecar_path(weights).write_bytes('["knife", "\u00e9p\u00e9e"]'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"m\.onnx\.threats\.json: not UTF-8 text \(byte 11\)"):
        resolve_threats(weights, NAMES)


def test_checkpoint_info_reads_a_data_yaml_that_is_not_utf8_as_no_threats(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from xraydet.inference.export import checkpoint_info

    data = tmp_path / "data.yaml"
    data.write_bytes("names: [caf\u00e9]\nthreats: [knife]\n".encode("latin-1"))
    ckpt = torch.load(tiny_model, map_location="cpu", weights_only=False)
    ckpt["train_args"] = {**ckpt["train_args"], "data": str(data)}
    weights = tmp_path / "m.pt"
    torch.save(ckpt, weights)
    info = checkpoint_info(weights)
    assert info["threats"] is None and info["names"]
    assert "not UTF-8" in caplog.text and str(data) in caplog.text


class _Source:
    def __init__(self) -> None:
        self.ref = ModelRef("m", "1", Path("m.onnx"))

    def current(self) -> ModelRef:
        return self.ref


class _FakePredictor:
    backend = "onnx"
    names = NAMES
    imgsz = 32

    def __init__(self, version: str) -> None:
        self.version = version


def test_holder_swaps_only_on_a_new_version_and_keeps_serving_on_failure() -> None:
    source = _Source()
    loads: list[str] = []

    def loader(ref: ModelRef, settings: ServeSettings) -> LoadedModel:
        if ref.version == "bad":
            raise ConfigError("broken model")
        loads.append(ref.version)
        return LoadedModel(ref=ref, predictor=_FakePredictor(ref.version), threats=[], threats_source="x")  # type: ignore[arg-type]

    holder = ModelHolder(source, ServeSettings(), loader)
    assert holder.current is None
    assert holder.refresh() is True
    first = holder.current
    assert holder.refresh() is False and holder.current is first and loads == ["1"]
    source.ref = ModelRef("m", "bad", Path("m.onnx"))
    assert holder.refresh() is False
    assert holder.current is first and "broken model" in (holder.last_error or "")
    source.ref = ModelRef("m", "2", Path("m.onnx"))
    assert holder.refresh() is True
    assert holder.current is not None and holder.current.ref.version == "2" and holder.last_error is None
    assert (
        first is not None and first.ref.version == "1"
    )  # a request holding the old model still has it intact
