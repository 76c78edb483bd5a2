"""The fast path: cached answers of GET topology, search, impact and asset detail, served before FastAPI.

Most requests of a console or a script repeat a question whose answer sits in the cache. For those,
routing, dependency injection and validation of FastAPI (and the layers of middleware Starlette and
FastAPI wrap around every request: error handling, telemetry, body limits) cost more than the answer
itself, so the app (``app.FlowLensApp``) hands every GET to this first:

1. it turns the URL into a :class:`~flowlens_dagster.api.plans.Plan` with the same functions the
   routes use (same validation, same cache key); anything it is not sure of (a bad or unusual
   parameter, another path or method) goes to FastAPI unchanged, which answers it as always;
2. one Redis round trip authenticates, counts both rate limits and reads the cache generation and
   entry (``store.SESSION_AND_COUNT``); a refused token or a limit is answered here (401/429, the
   same one-line JSON);
3. a hit is sent as stored (gzip, or decompressed for a client that does not take gzip), counted in
   the same metrics with the same labels as a routed request.

A miss goes on to FastAPI with the user already authenticated in the scope (``flowlens.user``), so
the request is counted against the rate limits once. Redis or PostgreSQL trouble also goes on to
FastAPI, whose handlers answer 503.
"""

from __future__ import annotations

import gzip
import time
from urllib.parse import parse_qsl

from flowlens_dagster.api import metrics, params, plans
from flowlens_dagster.api.errors import ApiError, error_response

API = "/api/v1"
ASSETS = f"{API}/assets/"
USER_SCOPE_KEY = "flowlens.user"


class _Unsure(Exception):
    """A parameter the fast path leaves to FastAPI's validation."""


def _int(args: dict[str, str], name: str, default: int | None = None) -> int | None:
    value = args.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()):
        raise _Unsure(name)
    return int(value)


def _bool(args: dict[str, str], name: str) -> bool:
    value = args.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise _Unsure
    return value in ("true", "1")


def plan_of(api, path: str, query_string: bytes) -> tuple[str, plans.Plan] | None:
    """(route template, plan) of a cacheable GET, or None when FastAPI should see it."""
    if path not in (f"{API}/search", f"{API}/impact", f"{API}/topology") and not path.startswith(ASSETS):
        return None
    args = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    try:
        f = params.filters(*(args.get(n) for n in params.FILTER_NAMES))
        if path == f"{API}/search":
            return path, plans.search(api, args.get("q"), f, _int(args, "limit"), args.get("cursor"))
        if path == f"{API}/impact":
            if "target" not in args:
                return None
            return path, plans.impact(api, args["target"], _int(args, "depth", 3), _int(args, "max_nodes"))
        if path == f"{API}/topology":
            group, prefix_len = args.get("group", "subnet"), _int(args, "prefix_len")
            with_bytes = _bool(args, "bytes")
            return path, plans.topology(api, f, group, prefix_len, _int(args, "limit"), args.get("cursor"), with_bytes)
        addr = path[len(ASSETS) :]
        if not addr or "/" in addr:
            return None
        return f"{ASSETS}{{addr}}", plans.asset(api, addr, f, _int(args, "limit"))
    except (ApiError, _Unsure):
        return None


def header(scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def bearer_of(authorization: str) -> str | None:
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else None


PLANS_KEPT = 10_000  # distinct URLs whose plans a worker keeps (a console repeats a working set of them)


class FastPath:
    """Serves cached answers before the app's middleware stack (``app.FlowLensApp.__call__`` asks it first)."""

    def __init__(self):
        # URL -> plan (or None): parsing and validating a query string costs more than serving a hit;
        # a plan depends on nothing but the URL and the config, so a repeated URL reuses it
        self.plans: dict[tuple[str, bytes], tuple[str, plans.Plan] | None] = {}

    def plan(self, api, path: str, query_string: bytes) -> tuple[str, plans.Plan] | None:
        key = (path, query_string)
        try:
            return self.plans[key]
        except KeyError:
            pass
        if len(self.plans) >= PLANS_KEPT:
            self.plans.clear()
        found = self.plans[key] = plan_of(api, path, query_string)
        return found

    async def serve(self, st, scope, send) -> bool:
        """Answer a GET ``scope`` from the cache (or refuse its token or limit); False: the app answers it."""
        began = time.perf_counter()
        found = self.plan(st.api, scope["path"], scope["query_string"])
        if found is None:
            return False
        endpoint, plan = found
        accept = header(scope, b"accept-encoding")
        client = scope.get("client")
        try:
            payload = await self._cached(st, scope, plan, client[0] if client else "unknown")
        except ApiError as exc:
            await _send(send, error_response(exc.status, exc.message, exc.parameter, exc.headers))
            _count(endpoint, exc.status, began)
            return True
        except Exception:  # Redis or PostgreSQL trouble: FastAPI's handlers answer it (503)
            return False
        if payload is None or (plan.query is None and "br" in accept):  # a miss, or the full map as br
            return False
        metrics.cache_hits_of(plan.cache).inc()
        if "gzip" in accept:
            await _respond(send, payload, [(b"content-encoding", b"gzip")])
        else:
            await _respond(send, gzip.decompress(payload), [])
        _count(endpoint, 200, began)
        return True

    async def _cached(self, st, scope, plan: plans.Plan, address: str) -> bytes | None:
        """The cached payload (None: a miss); the user, authenticated and counted, goes in the scope."""
        token = bearer_of(header(scope, b"authorization"))
        peek = st.cache.peek_request(plan.key)
        user, front = await st.auth.authorize_and_peek(token, address, peek)
        scope[USER_SCOPE_KEY] = user
        if peek is not None and front is not None:
            return st.cache.from_front(plan.key, front)
        return (await st.cache.peek(plan.key))[0]  # minimal mode, or an API token


def _count(endpoint: str, status: int, began: float) -> None:
    metrics.requests_of(endpoint, "GET", status).inc()
    metrics.latency_of(endpoint, "GET").observe(time.perf_counter() - began)


async def _respond(send, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    head = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        (b"vary", b"Accept-Encoding"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _send(send, response) -> None:
    """A Starlette response sent without its ASGI call (which wants receive and a full scope)."""
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
