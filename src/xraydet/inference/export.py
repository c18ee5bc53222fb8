"""Export a trained ``.pt`` to ONNX for :class:`~xraydet.inference.onnx_backend.OnnxPredictor`.

Ultralytics writes its export next to the weights it loads, so we export a *copy* inside a temp folder and
move the result into place atomically: the source folder is never written to and a half-written ``.onnx``
never appears. The data set's threat classes (``threats`` in the data.yaml recorded in the checkpoint) are
added to the ONNX metadata so the file describes itself when served.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from xraydet.config import read_utf8_text
from xraydet.errors import ConfigError, XrayDetError
from xraydet.inference.onnx_backend import graph_input_hw, warn_if_rounded
from xraydet.io import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

THREATS_KEY = "xraydet_threats"


def unreadable_checkpoint(path: str | Path, err: BaseException) -> XrayDetError:
    """The error for weights Ultralytics cannot load: names the file and the first line of the cause."""
    first = (str(err).strip().splitlines() or [""])[0].removeprefix("ERROR").strip(" ❌️:")
    return XrayDetError(f"{path}: not a readable Ultralytics checkpoint ({first or type(err).__name__})")


def checkpoint_info(pt_path: str | Path) -> dict[str, Any]:
    """``names``, ``imgsz``, ``threats`` and ``flipud`` (its training's vertical-flip probability) recorded in
    an Ultralytics checkpoint (``threats`` and ``flipud`` None if unknown).

    ``threats`` comes from the ``threats`` entry of the data.yaml the model was trained on, when that file
    still exists.
    """
    import yaml
    from ultralytics.nn.tasks import torch_safe_load

    try:
        ckpt, _ = torch_safe_load(str(pt_path))
        model = ckpt.get("ema") or ckpt.get("model")
        names = getattr(model, "names", None) or {}
        name_list = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        train_args = ckpt.get("train_args") or {}
    except Exception as err:  # a truncated, corrupt or foreign file: Ultralytics raises TypeError and others
        raise unreadable_checkpoint(pt_path, err) from err
    threats: list[str] | None = None
    data = train_args.get("data")
    if data and Path(str(data)).is_file():
        try:
            threats = (yaml.safe_load(read_utf8_text(Path(str(data)))) or {}).get("threats")
        except (OSError, yaml.YAMLError, ConfigError) as err:
            log.warning("cannot read threats from %s: %s", data, err)
    return {"names": name_list, "imgsz": train_args.get("imgsz"), "threats": threats,
            "flipud": train_args.get("flipud")}


def export_onnx(pt_path: str | Path, imgsz: int, out: str | Path | None = None) -> Path:
    """Export ``pt_path`` to ONNX at a fixed ``imgsz`` (square) and return the ``.onnx`` path.

    Args:
        pt_path: Ultralytics detection weights (``.pt``); read only.
        imgsz: the input size baked into the graph.
        out: destination (default: ``<pt stem>.onnx`` beside the weights).

    Example:
        >>> export_onnx("runs/x/weights/best.pt", 416)  # doctest: +SKIP
        PosixPath('runs/x/weights/best.onnx')
    """
    import onnx
    from ultralytics import YOLO

    pt_path = Path(pt_path)
    if not pt_path.is_file():
        raise FileNotFoundError(f"weights not found: {pt_path}")
    out = Path(out) if out is not None else pt_path.with_suffix(".onnx")
    info = checkpoint_info(pt_path)
    with tempfile.TemporaryDirectory(prefix="xraydet-export-") as tmp:
        copy = Path(tmp) / pt_path.name
        shutil.copy2(pt_path, copy)
        try:
            produced = YOLO(str(copy), task="detect").export(
                format="onnx", imgsz=imgsz, dynamic=False, simplify=True, opset=None, verbose=False
            )
        except Exception as err:
            raise XrayDetError(f"{pt_path}: ONNX export failed: {err}") from err
        model = onnx.load(str(produced))
        if info["threats"] is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = THREATS_KEY, json.dumps(list(info["threats"]))
        atomic_write_bytes(out, model.SerializeToString())
    fixed_hw = graph_input_hw(model)
    side = max(fixed_hw) if fixed_hw else imgsz  # Ultralytics rounds up to a multiple of the model's stride
    warn_if_rounded(pt_path, imgsz, side)
    log.info("exported %s -> %s (imgsz %d)", pt_path, out, side)
    return out


def cache_dir() -> Path:
    """Where exports of served ``.pt`` files are cached (``$XRAYDET_CACHE_DIR`` or ``~/.cache/xraydet``)."""
    return Path(os.environ.get("XRAYDET_CACHE_DIR", Path.home() / ".cache" / "xraydet")) / "onnx"


def cached_onnx(pt_path: str | Path, imgsz: int | None = None) -> Path:
    """An ONNX export of ``pt_path``, made once and reused (keyed by content hash and ``imgsz``)."""
    pt_path = Path(pt_path)
    digest = sha256_file(pt_path)[:16]
    size = int(imgsz or checkpoint_info(pt_path)["imgsz"] or 640)
    target = cache_dir() / f"{pt_path.stem}-{digest}-{size}.onnx"
    if not target.is_file():
        export_onnx(pt_path, size, target)
    return target
