"""A :class:`Predictor` that asks a running xraydet API, so evaluation can measure a deployment end to end."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from xraydet.inference.base import Predictor
from xraydet.structures import Detections


class HttpPredictor(Predictor):
    """Calls ``POST /v1/detect`` of ``api_url``; images travel as lossless PNG.

    Class names, input size, version, the served weights' SHA-256 and the server's test-time augmentation
    (``tta``; ``off`` when an older server does not say) come from ``GET /v1/models`` (:meth:`served_sha256`
    asks again). Boxes come back in the image's pixels.

    Example:
        >>> p = HttpPredictor("http://127.0.0.1:8000")  # doctest: +SKIP
        >>> p.predict(load_rgb("scan.jpg"), conf=0.25)  # doctest: +SKIP
    """

    backend = "http"

    def __init__(self, api_url: str, timeout_s: float = 60.0, api_key: str | None = None) -> None:
        from xraydet.serving.api_client import ApiClient, ApiError

        self.api = ApiClient(api_url, timeout_s, api_key)
        self.api.check_health()
        info = self.api.models()
        if info is None:
            raise ApiError(f"{api_url} has no /v1/models route; HttpPredictor needs an xraydet API")
        self.names = list(info["classes"])
        self.imgsz = int(info["imgsz"])
        self.version = str(info["version"])
        self.sha256: str | None = info.get("sha256")
        self.tta = str(info.get("tta") or "off")  # what the server does to each scan (an older one: nothing)
        self.source = api_url  # a URL, kept whole: Path() would fold its '//'

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7) -> Detections:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
        body = self.api.detect(buf.getvalue(), "image.png", conf, iou, content_type="image/png")
        items = body["items"]
        if not items:
            return Detections.empty(with_confidence=True)
        index = {n: i for i, n in enumerate(self.names)}
        return Detections(
            xyxy=np.array([it["bbox"] for it in items], dtype=np.float64),
            class_id=np.array(
                [it.get("class_id", index.get(it["name"], -1)) for it in items], dtype=np.int64
            ),
            confidence=np.array([it["confidence"] for it in items], dtype=np.float64),
        )

    def served_sha256(self) -> str | None:
        """The SHA-256 of the weights the API serves now (None when it does not say)."""
        info = self.api.models()
        return None if info is None else info.get("sha256")

    def close(self) -> None:
        self.api.close()
