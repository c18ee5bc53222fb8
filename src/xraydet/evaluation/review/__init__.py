"""Human review of random predictions: a verdict store, a small FastAPI app and its static page."""
