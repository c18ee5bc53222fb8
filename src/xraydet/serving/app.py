"""The detection API: ``create_app(settings)`` builds the FastAPI application that ``xraydet serve`` runs.

Routes: ``GET /health``, ``POST /v1/detect``, ``POST /v1/detect/batch``, ``GET /v1/models`` and the admin
route ``POST /v1/admin/reload`` (API key). Detection endpoints are plain ``def`` functions, so FastAPI runs
them in its thread pool and the event loop stays free while a model works. Bad input is always a 4xx with a
message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xraydet.serving.auth import require_api_key
from xraydet.serving.images import ImageError, configure_pil, decode_image
from xraydet.serving.model_holder import LoadedModel, ModelHolder
from xraydet.serving.model_source import ModelSource, source_for
from xraydet.serving.schemas import (
    BatchEntry,
    BatchResponse,
    DetectResponse,
    ErrorResponse,
    HealthResponse,
    Item,
    ModelInfo,
    ModelsResponse,
    ReloadResponse,
)
from xraydet.serving.settings import ServeSettings
from xraydet.structures import Detections

log = logging.getLogger(__name__)

_MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file bytes

_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "empty, truncated or corrupt image"},
    413: {"model": ErrorResponse, "description": "upload or image too large"},
    415: {"model": ErrorResponse, "description": "not an image"},
    503: {"model": ErrorResponse, "description": "no model loaded"},
}

CONF_QUERY = Query(0.25, ge=0, le=1, description="minimum confidence of returned boxes")
IOU_QUERY = Query(None, ge=0, le=1, description="NMS IoU threshold (server default if omitted)")


def detections_to_response(
    model: LoadedModel, dets: Detections, width: int, height: int, latency_ms: float
) -> DetectResponse:
    """The API's view of one image's detections (best first)."""
    dets = dets.sorted_by_confidence()
    threat_ids = model.threat_ids
    items = []
    for box, cls, conf in dets:
        x1, y1, x2, y2 = (float(v) for v in box)
        items.append(
            Item(
                name=model.names[cls] if 0 <= cls < len(model.names) else str(cls),
                class_id=cls,
                confidence=round(float(conf or 0.0), 6),
                bbox=[round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)],
                bbox_normalized=[
                    round(x1 / width, 6),
                    round(y1 / height, 6),
                    round(x2 / width, 6),
                    round(y2 / height, 6),
                ],
                is_threat=cls in threat_ids,
            )
        )
    threats = [it for it in items if it.is_threat]
    return DetectResponse(
        items=items,
        total_count=len(items),
        threats=threats,
        has_threat=bool(threats),
        image_width=width,
        image_height=height,
        model_name=model.ref.name,
        model_version=model.ref.version,
        latency_ms=round(latency_ms, 3),
    )


def _model_or_503(request: Request) -> LoadedModel:
    model = request.app.state.holder.current
    if model is None:
        detail = request.app.state.holder.last_error or "model is still loading"
        raise HTTPException(503, f"no model loaded: {detail}")
    return model


def _read_upload(upload: UploadFile, limit: int) -> bytes:
    # read(n) allocates n bytes up front: ask for no more than the upload holds, as the limit may be huge.
    want = limit if upload.size is None else min(limit, upload.size)
    data = upload.file.read(want + 1)
    if len(data) > limit:
        raise ImageError(f"{upload.filename or 'file'}: upload larger than {limit} bytes", 413)
    return data


def _detect_one(
    model: LoadedModel,
    data: bytes,
    filename: str,
    settings: ServeSettings,
    conf: float,
    iou: float | None,
    inference_slots: threading.BoundedSemaphore,
) -> DetectResponse:
    t0 = time.perf_counter()
    image = decode_image(data, settings.max_pixels, filename)
    # Inference already uses every core; running several at once only makes them fight over the same cores
    # (throughput falls as clients are added). Requests queue here instead; decoding stays concurrent.
    with inference_slots:
        dets = model.predict(image, conf, settings.default_iou if iou is None else iou)
    h, w = image.shape[:2]
    return detections_to_response(model, dets, w, h, (time.perf_counter() - t0) * 1000)


def _model_info(model: LoadedModel) -> ModelInfo:
    p = model.predictor
    return ModelInfo(
        name=model.ref.name,
        version=model.ref.version,
        backend=p.backend,
        tta=p.tta,
        weights=str(model.ref.weights),
        sha256=model.sha256,
        imgsz=p.imgsz,
        classes=list(model.names),
        threats=model.threats,
        threats_source=model.threats_source,
        loaded_at=model.loaded_at,
    )


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (limit set by --max-upload-mb)")


class BodyLimitMiddleware:
    """Cap the request body size per path, answering 413 with the API's JSON error body ``{"detail": ...}``.

    A declared ``Content-Length`` over the limit is refused before anything is read; otherwise the bytes are
    counted as the endpoint reads them. (Starlette's own ``max_body_size`` answers in plain text.)
    """

    def __init__(self, app: ASGIApp, limit: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope.get("path", ""), self.limit)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)  # FastAPI turns it into the JSON error body
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        body = ErrorResponse(detail=_BodyTooLarge(limit).detail).model_dump()
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)


async def _poll(holder: ModelHolder, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        await run_in_threadpool(holder.refresh)


def create_app(settings: ServeSettings, source: ModelSource | None = None) -> FastAPI:
    """Build the API for ``settings``; the model comes from ``source`` or from ``settings.model``.

    The first model is loaded at startup (a failure leaves the server up but unhealthy, retrying at each
    poll, except a ``threats`` setting naming classes the model lacks, which fails the startup: see
    :meth:`ModelHolder.start`); afterwards the source is checked every ``settings.poll_s`` seconds and on
    ``POST /v1/admin/reload``.

    Example:
        >>> app = create_app(ServeSettings(model="best.onnx"))  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
    """
    if source is None:
        if not settings.model:
            raise ValueError("pass a model source or set settings.model")
        source = source_for(settings.model)
    holder = ModelHolder(source, settings)
    configure_pil(settings.max_pixels)
    inference_slots = threading.BoundedSemaphore(settings.max_concurrent_inferences)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(holder.start)  # nothing to do when `xraydet serve` has loaded it already
        task = asyncio.create_task(_poll(holder, settings.poll_s)) if settings.poll_s > 0 else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    single_limit = settings.max_upload_bytes + _MULTIPART_SLACK
    batch_limit = settings.max_upload_bytes * settings.max_batch_files + _MULTIPART_SLACK
    app = FastAPI(
        title="xraydet detection API",
        version="1",
        description="Threat detection on X-ray baggage scans.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, limit=batch_limit, per_path={"/v1/detect": single_limit})
    app.state.settings = settings
    app.state.holder = holder

    @app.exception_handler(ImageError)
    async def _image_error(request: Request, err: ImageError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status_code)

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "no model loaded"}},
    )
    def health() -> JSONResponse:
        model = holder.current
        body = HealthResponse(
            status="healthy" if model else "unhealthy",
            model_loaded=model is not None,
            model=model.ref.name if model else None,
            version=model.ref.version if model else None,
            backend=model.predictor.backend if model else None,
            tta=model.predictor.tta if model else None,
        )
        return JSONResponse(body.model_dump(), status_code=200 if model else 503)

    @app.post("/v1/detect", response_model=DetectResponse, responses=_UPLOAD_ERRORS)
    def detect(
        request: Request,
        file: UploadFile = File(..., description="the scan (JPEG, PNG, BMP, TIFF, WebP)"),
        conf_threshold: float = CONF_QUERY,
        iou_threshold: float | None = IOU_QUERY,
    ) -> DetectResponse:
        model = _model_or_503(request)  # this request uses this model to the end, even across a swap
        data = _read_upload(file, settings.max_upload_bytes)
        return _detect_one(
            model, data, file.filename or "file", settings, conf_threshold, iou_threshold, inference_slots
        )

    @app.post("/v1/detect/batch", response_model=BatchResponse, responses=_UPLOAD_ERRORS)
    def detect_batch(
        request: Request,
        files: list[UploadFile] = File(..., description="several scans; each gets its own result"),
        conf_threshold: float = CONF_QUERY,
        iou_threshold: float | None = IOU_QUERY,
    ) -> BatchResponse:
        model = _model_or_503(request)
        if len(files) > settings.max_batch_files:
            raise ImageError(f"{len(files)} files in one batch; the limit is {settings.max_batch_files}", 413)
        t0 = time.perf_counter()
        entries = []
        for upload in files:
            name = upload.filename or "file"
            try:
                data = _read_upload(upload, settings.max_upload_bytes)
                result = _detect_one(
                    model, data, name, settings, conf_threshold, iou_threshold, inference_slots
                )
                entries.append(BatchEntry(filename=name, ok=True, status_code=200, result=result))
            except ImageError as err:
                entries.append(
                    BatchEntry(filename=name, ok=False, status_code=err.status_code, error=str(err))
                )
        return BatchResponse(
            results=entries,
            total_count=sum(e.result.total_count for e in entries if e.result),
            n_files=len(entries),
            n_failed=sum(not e.ok for e in entries),
            model_version=model.ref.version,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        )

    @app.get("/v1/models", response_model=ModelsResponse)
    def models() -> ModelsResponse:
        model = holder.current
        return ModelsResponse(current=_model_info(model) if model else None, last_error=holder.last_error)

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadResponse,
        dependencies=[Depends(require_api_key)],
        responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
    )
    async def reload() -> ReloadResponse:
        changed = await run_in_threadpool(holder.refresh)
        model = holder.current
        return ReloadResponse(
            changed=changed, version=model.ref.version if model else None, error=holder.last_error
        )

    return app
