"""Request and response bodies of the API (also its OpenAPI schema, which the fuzz tests check against).

The detect response keeps the seed API's fields (``items[].name``, ``items[].confidence``, ``total_count``) so
clients written for it work unchanged.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Item(BaseModel):
    name: str = Field(description="class name")
    class_id: int
    confidence: float = Field(ge=0, le=1)
    bbox: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in image pixels")
    bbox_normalized: list[float] = Field(
        min_length=4, max_length=4, description="x1, y1, x2, y2 / width, height"
    )
    is_threat: bool


class DetectResponse(BaseModel):
    items: list[Item] = Field(description="detections, best first")
    total_count: int
    threats: list[Item] = Field(description="the items whose class is a threat class")
    has_threat: bool
    image_width: int
    image_height: int
    model_name: str
    model_version: str
    latency_ms: float = Field(description="decode + inference time on the server")


class BatchEntry(BaseModel):
    filename: str
    ok: bool
    status_code: int = Field(description="what a single /v1/detect call would have answered")
    error: str | None = None
    result: DetectResponse | None = None


class BatchResponse(BaseModel):
    results: list[BatchEntry]
    total_count: int = Field(description="detections over all files")
    n_files: int
    n_failed: int
    model_version: str
    latency_ms: float


class HealthResponse(BaseModel):
    status: str = Field(description='"healthy" when a model is loaded, else "unhealthy"')
    model_loaded: bool
    model: str | None = None
    version: str | None = None
    backend: str | None = None
    tta: str | None = Field(default=None, description="test-time augmentation of the served model")


class ModelInfo(BaseModel):
    name: str
    version: str
    backend: str
    tta: str = Field(
        "off",
        description="test-time augmentation: off, hflip (2 model calls per scan) or flips (4), the views' "
        "boxes fused",
    )
    weights: str
    sha256: str | None = Field(
        default=None, description="SHA-256 of the served weights file: ties an evaluation to a version"
    )
    imgsz: int
    classes: list[str]
    threats: list[str]
    threats_source: str = Field(description="where the threat list came from")
    loaded_at: str


class ModelsResponse(BaseModel):
    current: ModelInfo | None
    last_error: str | None = None


class ReloadResponse(BaseModel):
    changed: bool
    version: str | None
    error: str | None = None


class ErrorResponse(BaseModel):
    detail: str
