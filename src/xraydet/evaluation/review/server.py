"""``xraydet review``: a small web app where a person judges random predictions of a report.

Routes: ``GET /`` (the page), ``GET /static/...``, ``GET /api/items`` (the sampled items with boxes and the
verdicts so far), ``GET /api/items/{id}/image``, ``POST /api/items/{id}/verdict`` (``{"verdict": "correct" |
"wrong" | "missed_threat"}``, saved at once). Unknown ids answer 404 and bad verdicts 422, never 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from xraydet.errors import XrayDetError
from xraydet.evaluation.report import PREDICTIONS_JSONL, load_report
from xraydet.evaluation.review.store import VerdictStore, sample_items
from xraydet.io import decode_text

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


class VerdictIn(BaseModel):
    verdict: Literal["correct", "wrong", "missed_threat"]
    note: str = Field(default="", max_length=2000)


def read_records(report_dir: Path) -> list[dict[str, Any]]:
    """The per-image prediction records ``xraydet eval`` wrote."""
    path = report_dir / PREDICTIONS_JSONL
    if not path.is_file():
        raise XrayDetError(f"{path}: missing; re-run `xraydet eval ... --out {report_dir}`")
    records = []
    # decode_text: bytes that are not UTF-8 raise an XrayDetError naming the file, line and byte
    for number, line in enumerate(decode_text(path.read_bytes(), path).splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise XrayDetError(f"{path}:{number}: not JSON ({err.msg})") from err
    return records


def create_review_app(report_dir: str | Path, n: int = 100, seed: int = 0) -> FastAPI:
    """The review app for one report folder; verdicts go to ``REPORT_DIR/review/verdicts.json``."""
    report_dir = Path(report_dir)
    report = load_report(report_dir)
    items = sample_items(read_records(report_dir), n, seed)
    by_id = {item["id"]: item for item in items}
    store = VerdictStore.open_or_create(
        report_dir / "review", report.report_id, meta={"n": n, "seed": seed, "items": list(by_id)}
    )
    app = FastAPI(title="xraydet review", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def item_or_404(item_id: str) -> dict[str, Any]:
        if item_id not in by_id:
            raise HTTPException(status_code=404, detail=f"no item {item_id!r} in this review")
        return by_id[item_id]

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/items")
    def list_items() -> dict[str, Any]:
        verdicts, counts = store.snapshot()  # verdict POSTs run in other threads
        return {
            "report_id": report.report_id,
            "model": report.model_name,
            "conf": report.conf,
            "threats": report.threats,
            "items": [
                {k: item[k] for k in ("id", "source", "width", "height", "gt", "pred")}
                | {"name": Path(item["image"]).name, "image_url": f"/api/items/{item['id']}/image"}
                for item in items
            ],
            "verdicts": {k: v for k, v in verdicts.items() if k in by_id},
            "counts": counts,
        }

    @app.get("/api/items/{item_id}/image")
    def image(item_id: str) -> FileResponse:
        path = Path(item_or_404(item_id)["image"])
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"image file of item {item_id} is gone: {path}")
        return FileResponse(path)

    @app.post("/api/items/{item_id}/verdict")
    def set_verdict(item_id: str, body: VerdictIn) -> dict[str, Any]:
        item = item_or_404(item_id)
        counts = store.set(item_id, body.verdict, image=item["image"], note=body.note)
        return {"id": item_id, "verdict": body.verdict, "counts": counts}

    return app


def serve(
    report_dir: str | Path,
    n: int = 100,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 8765,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the review app with uvicorn until interrupted; ``on_ready`` is called once the report has loaded
    (so a banner never precedes an error about the report)."""
    import uvicorn

    app = create_review_app(report_dir, n=n, seed=seed)
    log.info("review %s at http://%s:%d/", report_dir, host, port)
    if on_ready is not None:
        on_ready()
    uvicorn.run(app, host=host, port=port, log_level="warning")
