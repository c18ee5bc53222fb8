"""API-key check for admin routes (a FastAPI dependency)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="admin API key")


def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    """401 without a key, 403 with a wrong one, 403 when the server has no key (admin routes off)."""
    expected: str | None = request.app.state.settings.api_key
    if not expected:
        raise HTTPException(
            403, "admin routes are disabled: start the server with --api-key or XRAYDET_API_KEY"
        )
    if not key:
        raise HTTPException(
            401, "missing API key: send it in the X-API-Key header", headers={"WWW-Authenticate": "APIKey"}
        )
    # Starlette decodes header bytes as latin-1, so this gives back the bytes sent; the configured key is
    # ASCII (ServeSettings checks it).
    if not hmac.compare_digest(key.encode("latin-1", "replace"), expected.encode("utf-8")):
        raise HTTPException(403, "wrong API key")
