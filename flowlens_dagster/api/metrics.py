"""The API's Prometheus metrics (scaling model §9.1 names), served on ``/metrics``.

The cache counters ``flowlens_redis_cache_hits_total`` / ``_misses_total`` carry the same names as the
enrichment caches' (``assets.metrics``, exported by the pipeline's exporter), with the API's labels
``cache="topology"``, ``"search"`` or ``"impact"``: each process exports the caches it uses.

``flowlens api`` runs several worker processes; each writes its samples to files in a shared
directory (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set by ``flowlens api``
before the workers start), and ``/metrics`` in any worker aggregates all of them. Without that
variable (one process, e.g. tests) the default registry is served.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

REQUESTS = Counter("flowlens_api_requests_total", "API requests", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "flowlens_api_latency_seconds", "API request latency", ["endpoint", "method"], buckets=LATENCY_BUCKETS
)
WEBSOCKETS = Gauge("flowlens_websocket_connections_active", "Open change-feed WebSockets", multiprocess_mode="livesum")
LOGIN_FAILURES = Counter("flowlens_api_login_failures_total", "Failed API logins")
CACHE_HITS = Counter("flowlens_redis_cache_hits_total", "API cache hits", ["cache"])
CACHE_MISSES = Counter("flowlens_redis_cache_misses_total", "API cache misses", ["cache"])
RATE_LIMITED = Counter("flowlens_api_rate_limited_total", "Requests refused with 429", ["scope"])


# The labelled children of the per-request metrics, looked up once per label set: labels() validates
# and locks on every call, a cost each request would otherwise pay three times (routes and statuses
# are few, so these caches stay small).
@functools.cache
def requests_of(endpoint: str, method: str, status: int):
    return REQUESTS.labels(endpoint, method, str(status))


@functools.cache
def latency_of(endpoint: str, method: str):
    return LATENCY.labels(endpoint, method)


@functools.cache
def cache_hits_of(cache: str):
    return CACHE_HITS.labels(cache)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics (or this process's)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
