"""The query API (``flowlens api``): FastAPI on uvicorn over the pipeline's PostgreSQL tables, with the
scaling model's Redis cache, sessions, rate limits and change feed. See the README, "Querying the map"."""
