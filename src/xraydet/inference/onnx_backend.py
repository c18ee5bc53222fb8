"""ONNX Runtime inference on an Ultralytics-exported detector, without PyTorch.

Pre- and post-processing copy Ultralytics' own (``LetterBox`` with grey 114 padding, the same rounding,
class-aware greedy NMS, boxes mapped back through the same gain and padding), so boxes match
``UltralyticsPredictor`` on the same weights; ``tests/serving/test_onnx_backend.py`` checks that on real
scans.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from xraydet.errors import XrayDetError
from xraydet.inference.base import Predictor, UnusableSetting
from xraydet.structures import Detections

log = logging.getLogger(__name__)

PAD_VALUE = 114
MAX_WH = 7680  # Ultralytics' class offset for class-aware NMS
MAX_NMS = 30000
MAX_DET = 300
CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?|(\d+)")  # cuda, cuda:N or a bare index N


def execution_providers(device: str | int) -> tuple[str, list[Any]]:
    """The device ONNX Runtime will run on (``cpu`` or ``cuda:N``) and the execution providers for it.

    The ONNX backend runs on the CPU or one CUDA GPU (``cuda``, ``cuda:N`` or an index ``N``). Any other
    device, or a GPU when this onnxruntime has no CUDA provider, raises an :class:`UnusableSetting` naming
    ``--device``: a screening server asked for a GPU must not quietly run many times slower on the CPU.

    Example:
        >>> execution_providers("cpu")
        ('cpu', ['CPUExecutionProvider'])
        >>> execution_providers("gpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xraydet.inference.base.UnusableSetting: --device gpu: not a device the onnx backend can use; ...
    """
    text = str(device).strip().lower()
    if text == "cpu":
        return "cpu", ["CPUExecutionProvider"]
    match = CUDA_DEVICE.fullmatch(text)
    if match is None:
        raise UnusableSetting(
            f"--device {device}: not a device the onnx backend can use; it runs on cpu or one CUDA GPU "
            "(cuda, cuda:N or an index N)"
        )
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise UnusableSetting(
            f"--device {device}: this onnxruntime has no CUDA provider (only {', '.join(available)}); "
            "install onnxruntime-gpu in its place (pip uninstall onnxruntime, then pip install "
            "onnxruntime-gpu: the two cannot share an environment), or run with --device cpu"
        )
    index = int(match.group(1) or match.group(2) or 0)
    # CPU after CUDA: ONNX Runtime places the few operators CUDA lacks there.
    return f"cuda:{index}", [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def round_to_stride(imgsz: int, stride: int) -> int:
    """``imgsz`` rounded up to a multiple of ``stride``, as Ultralytics rounds it (an export at 150 is 160).

    Example:
        >>> round_to_stride(150, 32), round_to_stride(160, 32)
        (160, 160)
    """
    return max(math.ceil(imgsz / stride), 1) * stride


def check_fixed_imgsz(source: str | Path, imgsz: int | None, fixed_hw: tuple[int, int], stride: int) -> None:
    """Refuse an ``imgsz`` other than the fixed input size of ``source``, which would run at its own size.

    An ``imgsz`` that rounds up to it is its size: an export at that ``imgsz`` gives this very model.
    """
    if imgsz and round_to_stride(imgsz, stride) != max(fixed_hw):
        h, w = fixed_hw
        raise UnusableSetting(
            f"--imgsz {imgsz}: {source} has a fixed {h}x{w} input (the size it was exported at); leave "
            f"--imgsz out to run it at {max(fixed_hw)}, or export it again (xraydet export --imgsz {imgsz})"
        )


def graph_input_hw(model: Any) -> tuple[int, int] | None:
    """The fixed ``(height, width)`` of an ``onnx.ModelProto``'s image input; None when it is dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim[2:]
    if len(dims) != 2 or not all(d.HasField("dim_value") for d in dims):
        return None
    return int(dims[0].dim_value), int(dims[1].dim_value)


def warn_if_rounded(source: str | Path, imgsz: int, side: int) -> None:
    """Say so when a model runs or is exported at another size than asked (rounded up to its stride)."""
    if side != imgsz:
        log.warning("%s: imgsz %d rounded up to %d (a multiple of the model's stride)", source, imgsz, side)


def fixed_input_size(path: str | Path, imgsz: int | None = None) -> int | None:
    """The side of an ONNX file's fixed input (None when it is dynamic), refusing another ``imgsz``.

    For backends that do not read the graph themselves: Ultralytics runs a fixed-size model at its own size
    whatever ``imgsz`` it is given.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fixed_hw = graph_input_hw(model)
    if fixed_hw is None:
        return None
    stride = next((int(p.value) for p in model.metadata_props if p.key == "stride"), 32)
    check_fixed_imgsz(path, imgsz, fixed_hw, stride)
    return max(fixed_hw)


def letterbox(
    image: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to ``size`` (h, w) exactly as Ultralytics' ``LetterBox``.

    Returns:
        The padded image, the ``(gain_x, gain_y)`` actually applied and the ``(left, top)`` padding.

    Example:
        >>> img, gain, pad = letterbox(np.zeros((100, 200, 3), np.uint8), (64, 64))
        >>> img.shape, pad
        ((64, 64, 3), (0, 16))
    """
    h, w = image.shape[:2]
    r = min(size[0] / h, size[1] / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (size[1] - new_w) / 2, (size[0] - new_h) / 2
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, (new_w / w, new_h / h), (left, top)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, best first; a box goes when its IoU with a kept one is > ``iou``.

    Example:
        >>> boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]])
        >>> nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist()
        [0, 2]
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode_output(raw: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn a YOLO head output ``(4 + nc, N)`` (cx, cy, w, h, class scores) into NMS-ed xyxy, score, class."""
    pred = raw.T  # (N, 4 + nc)
    scores_all = pred[:, 4:]
    cls = scores_all.argmax(1)
    score = scores_all[np.arange(len(pred)), cls]
    keep = score > conf
    pred, cls, score = pred[keep], cls[keep], score[keep]
    if len(score) > MAX_NMS:
        top = np.argsort(-score, kind="stable")[:MAX_NMS]
        pred, cls, score = pred[top], cls[top], score[top]
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kept = nms(xyxy + (cls * MAX_WH)[:, None], score, iou)[:MAX_DET]
    return xyxy[kept], score[kept], cls[kept]


def read_metadata(session: Any) -> dict[str, Any]:
    """Ultralytics writes ``names``, ``imgsz``, ``stride`` ... as Python literals into the ONNX metadata."""
    meta: dict[str, Any] = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        try:
            meta[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            try:
                meta[key] = json.loads(value)
            except ValueError:
                meta[key] = value
    return meta


def _names_from(meta: dict[str, Any], nc: int) -> list[str]:
    names = meta.get("names")
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return [f"class{i}" for i in range(nc)]


class OnnxPredictor(Predictor):
    """A direct ONNX Runtime session on an Ultralytics-exported ``.onnx`` (no PyTorch needed).

    Args:
        weights: the ``.onnx`` file (see :func:`xraydet.inference.export.export_onnx`).
        imgsz: input size; for a model with a fixed input size, only that size (or one rounding up to it).
        threads: ONNX Runtime intra-op threads (default: all cores).
        device: ``cpu``, or a CUDA GPU (``cuda``, ``cuda:N``, ``N``); see :func:`execution_providers`.

    Raises:
        UnusableSetting: a ``device`` or ``imgsz`` this machine or model cannot honour.

    Example:
        >>> p = OnnxPredictor("best.onnx")  # doctest: +SKIP
        >>> dets = p.predict(load_rgb("scan.jpg"), conf=0.25)  # doctest: +SKIP
    """

    backend = "onnx"

    def __init__(
        self, weights: str | Path, imgsz: int | None = None, threads: int | None = None, device: str = "cpu"
    ) -> None:
        import onnxruntime as ort

        self.source = Path(weights)
        if self.source.suffix != ".onnx":
            raise XrayDetError(
                f"{self.source}: OnnxPredictor needs an .onnx file; export it first (xraydet export)"
            )
        self.device, providers = execution_providers(device)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.source), opts, providers=providers)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            on = "" if self.device == "cpu" else f" on {self.device}"
            raise XrayDetError(f"{self.source}: not a loadable ONNX model{on} ({err})") from err
        if self.device != "cpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            # ONNX Runtime falls back to the CPU with only a log line when CUDA or cuDNN will not load.
            raise UnusableSetting(
                f"--device {device}: ONNX Runtime could not start CUDA for {self.source} and fell back to "
                "the CPU (are the CUDA and cuDNN libraries installed?); fix that, or run with --device cpu"
            )
        self.metadata = read_metadata(self.session)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        out_shape = self.session.get_outputs()[0].shape
        self.end2end = bool(self.metadata.get("end2end", False))
        self.stride = int(self.metadata.get("stride", 32))
        self.input_hw = self._input_hw(inp.shape, imgsz)
        self.imgsz = max(self.input_hw)
        nc = out_shape[1] - 4 if isinstance(out_shape[1], int) and not self.end2end else 0
        self.names = _names_from(self.metadata, nc)
        log.debug(
            "loaded %s on %s: input %s, %d classes", self.source, self.device, self.input_hw, len(self.names)
        )

    def _input_hw(self, shape: list[Any], imgsz: int | None) -> tuple[int, int]:
        """A fixed input's size (refusing another ``imgsz``), else ``imgsz`` rounded up to the stride as an
        export rounds it, else the size the model was exported at."""
        fixed = [d for d in shape[2:] if isinstance(d, int)]
        if len(fixed) == 2:
            check_fixed_imgsz(self.source, imgsz, (fixed[0], fixed[1]), self.stride)
            return fixed[0], fixed[1]
        if imgsz:
            side = round_to_stride(imgsz, self.stride)  # a dynamic graph fails on other sizes
            warn_if_rounded(self.source, imgsz, side)
            return side, side
        meta_sz = self.metadata.get("imgsz")
        if meta_sz is None:
            return 640, 640
        sz = [int(s) for s in (meta_sz if isinstance(meta_sz, list | tuple) else [meta_sz, meta_sz])]
        return sz[0], sz[-1]

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        """RGB ``uint8`` HxWx3 -> NCHW float32 in [0, 1], plus the gain and padding to undo."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        padded, gain, pad = letterbox(image, self.input_hw)
        blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        return blob, gain, pad

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        blob, (gx, gy), (left, top) = self.preprocess(image)
        raw = self.session.run(None, {self.input_name: blob})[0][0]
        if self.end2end:  # (max_det, 6): x1, y1, x2, y2, score, class, already NMS-free
            raw = raw[raw[:, 4] > conf]
            xyxy, score, cls = raw[:, :4].astype(np.float64), raw[:, 4], raw[:, 5].astype(np.int64)
        else:
            xyxy, score, cls = decode_output(raw, conf, iou)
            xyxy = xyxy.astype(np.float64)
        h, w = image.shape[:2]
        xyxy[:, [0, 2]] = ((xyxy[:, [0, 2]] - left) / gx).clip(0, w)
        xyxy[:, [1, 3]] = ((xyxy[:, [1, 3]] - top) / gy).clip(0, h)
        return Detections(xyxy=xyxy, class_id=cls.astype(np.int64), confidence=score.astype(np.float64))
