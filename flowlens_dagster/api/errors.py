"""One-line JSON errors: every 4xx/5xx the API sends is ``{"error": "...", "parameter": "..."}``.

Handlers turn bad input into 400/404/422 naming the parameter and what is allowed, a database or
Redis that does not answer into 503 with the reason, and anything unexpected into a 500 without a
traceback (the traceback goes to the log).
"""

from __future__ import annotations

import logging

import orjson
import psycopg
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("flowlens.api")


class ApiError(Exception):
    """A request the API refuses: HTTP status, the parameter at fault (or None) and a one-line message."""

    def __init__(self, status: int, message: str, parameter: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.parameter, self.headers = status, message, parameter, headers or {}


def bad(parameter: str, message: str) -> ApiError:
    """400 for a parameter: ``bad("port", "must be an integer 0-65535, got 'x'")``."""
    return ApiError(400, f"{parameter}: {message}", parameter)


def error_response(status: int, message: str, parameter: str | None = None, headers: dict | None = None) -> Response:
    body = {"error": " ".join(message.split()), "parameter": parameter}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _validation(_request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
    parameter = loc[-1] if loc else None
    given = first.get("input")
    got = f", got {given!r}" if isinstance(given, str | int | float) else ""
    return error_response(
        422 if "body" in first.get("loc", ()) else 400, f"{parameter}: {first['msg']}{got}", parameter
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.parameter, exc.headers)

    app.add_exception_handler(RequestValidationError, _validation)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(psycopg.OperationalError)
    async def _pg_down(_request: Request, exc: psycopg.OperationalError) -> Response:
        return _unavailable("PostgreSQL", exc)

    @app.exception_handler(PoolTimeout)
    async def _pool(request: Request, exc: PoolTimeout) -> Response:
        return pool_timeout_response(request.app.state.flowlens.pool.get_stats(), exc)

    @app.exception_handler(redis.exceptions.ConnectionError)
    async def _redis_down(_request: Request, exc: redis.exceptions.ConnectionError) -> Response:
        return _unavailable("Redis", exc)

    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _redis_slow(_request: Request, exc: redis.exceptions.TimeoutError) -> Response:
        return _unavailable("Redis", exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the API log")


def pool_timeout_response(stats: dict[str, int], exc: PoolTimeout) -> Response:
    """No connection came in time: PostgreSQL down (the pool holds none), or every connection busy
    with slower queries (the pool is full): then PostgreSQL is up and the answer says so."""
    size = stats.get("pool_size", 0)
    if not size or stats.get("pool_available", 0):
        return _unavailable("PostgreSQL", exc)
    log.warning("PostgreSQL busy: all %d connections of this worker in use", size)
    message = (
        f"PostgreSQL busy: all {size} connections of this API worker stayed in use ({exc}); "
        "retry, or raise api.pg_pool_size or api.workers"
    )
    return error_response(503, message, None, {"Retry-After": "1"})


def _unavailable(service: str, exc: Exception) -> Response:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("%s unavailable: %s", service, reason)
    message = f"{service} unavailable: {reason} (start it with `flowlens stack up`)"
    return error_response(503, message, None, {"Retry-After": "5"})
