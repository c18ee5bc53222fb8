"""The detection HTTP API: FastAPI app, model sources with hot swap, upload limits, API-test client."""
