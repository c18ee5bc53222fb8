"""Server settings, validated once at the edge (CLI flags or code), then read everywhere."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from xraydet.inference.tta import TTA


class ServeSettings(BaseModel):
    """Everything ``xraydet serve`` can be told.

    Attributes:
        model: a weights path (``.onnx``/``.pt``) or a registry name (``name``, ``name@champion``); None
            when a :class:`~xraydet.serving.model_source.ModelSource` is passed to ``create_app`` directly.
        backend: ``onnx`` (ONNX Runtime; a ``.pt`` is exported once to a cache), ``ultralytics`` (PyTorch) or
            ``auto`` (ONNX Runtime for an ``.onnx`` file or on the CPU, Ultralytics for a ``.pt`` on a GPU).
        tta: test-time augmentation (:mod:`xraydet.inference.tta`): ``off``, ``hflip`` (the scan and its
            mirror image, 2 model calls per scan) or ``flips`` (also upside down, and both: 4 calls); the
            views' boxes are fused into one answer.
        threats: threat class names overriding what the model says (see ``serving.threats``); at least one,
            since an empty list would silently turn every alarm off.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not silently the default

    model: str | None = None
    backend: Literal["auto", "onnx", "ultralytics"] = "auto"
    tta: TTA = "off"
    device: str = "cpu"
    imgsz: int | None = Field(default=None, ge=32, le=4096)
    threads: int | None = Field(default=None, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: str | None = Field(
        default_factory=lambda: os.environ.get("XRAYDET_API_KEY") or None, validate_default=True
    )
    max_upload_mb: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    max_pixels: int = Field(default=40_000_000, ge=1)
    max_batch_files: int = Field(default=16, ge=1)
    max_concurrent_inferences: int = Field(
        default=1, ge=1, description="model calls at once; more only helps with spare cores or a GPU"
    )
    poll_s: float = Field(default=30.0, ge=0, description="seconds between model-source checks; 0 = never")
    default_iou: float = Field(default=0.7, ge=0, le=1)
    threats: list[str] | None = Field(default=None, min_length=1)

    @field_validator("api_key")
    @classmethod
    def _header_safe_key(cls, value: str | None) -> str | None:
        # The key travels in the X-API-Key header: HTTP carries only visible ASCII there (and strips spaces at
        # the ends), so any other key could never match.
        if value and not all(0x21 <= ord(ch) <= 0x7E or ch == " " for ch in value):
            raise ValueError(
                "the API key (--api-key / XRAYDET_API_KEY) must be printable ASCII: an HTTP header cannot "
                "carry other characters, so such a key could never be sent"
            )
        if value and value != value.strip(" "):
            raise ValueError(
                "the API key (--api-key / XRAYDET_API_KEY) must not start or end with a space: HTTP strips "
                "them from the header"
            )
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
