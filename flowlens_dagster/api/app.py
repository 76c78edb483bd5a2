"""The FastAPI application: ``create_app()`` (uvicorn factory) and the ``/api/v1`` routes.

Shapes of every answer are documented on each route (``/docs`` shows them). Lists take ``limit`` and
return ``next_cursor`` (null on the last page); pass it back as ``cursor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated

import anyio
import brotli
import orjson
from fastapi import Depends, FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.middleware.gzip import GZipMiddleware
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from starlette.responses import Response

from assets.keys import TOPOLOGY_CHANGES
from flowlens_dagster.api import errors, metrics, params, plans, queries
from flowlens_dagster.api.auth import Auth, User
from flowlens_dagster.api.cache import Cache
from flowlens_dagster.api.console import mount_console
from flowlens_dagster.api.errors import ApiError, bad
from flowlens_dagster.api.fast import USER_SCOPE_KEY, FastPath
from flowlens_dagster.api.store import MemoryStore, RedisStore
from flowlens_dagster.api.ws import CHANNELS, Hub, Subscriber
from ingest.config import FlowLensConfig, load_config

API = "/api/v1"
JSON = "application/json"
REPLAY_PAGE = 1000
GZIP_LEVEL = 6


class Login(BaseModel):
    username: str
    password: str


class State:
    """Per-process resources, opened in the lifespan."""

    def __init__(self, cfg: FlowLensConfig):
        self.cfg, self.api = cfg, cfg.api
        self.pool = AsyncConnectionPool(
            cfg.postgres.dsn(),
            min_size=1,
            max_size=cfg.api.pg_pool_size,
            open=False,
            timeout=5,  # waiting longer for a connection: answer 503 instead
            kwargs={"row_factory": dict_row, "autocommit": True, "application_name": "flowlens-api"},
            reconnect_timeout=0,
        )
        self.redis = cfg.uses_redis
        if self.redis:
            self.cache_store, self.session_store = (
                RedisStore(cfg.redis.url(db)) for db in (cfg.api.cache_db, cfg.api.session_db)
            )
        else:
            self.cache_store, self.session_store = MemoryStore(), MemoryStore()
        self.cache = Cache(self.cache_store, None if self.redis else self.last_window, cfg.api.cache_db)
        self.auth = Auth(cfg.api, self.pool, self.session_store)
        self.hub = Hub(cfg.redis.url() if self.redis else None, self.changes_since)
        self.trigram: bool | None = None
        if cfg.mode == "auto":  # Redis or not is decided at run time (flowlens_dagster/redis_mode.py)
            from flowlens_dagster.redis_mode import attach

            attach(self)

    async def last_window(self) -> str:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT coalesce(max(finished_at)::text, '-') AS g FROM flowlens.window_loads WHERE asset = %s",
                (TOPOLOGY_CHANGES,),
            )
            return (await cur.fetchone())["g"]

    async def changes_since(self, after: int) -> list[dict]:
        async with self.pool.connection() as conn:
            if after < 0:
                cur = await conn.execute("SELECT coalesce(max(id), 0) AS id FROM flowlens.changes")
                return [await cur.fetchone()]
            return await queries.changes_after(conn, params.Filters(), None, after, REPLAY_PAGE)

    async def cached_query(self, request: Request, plan: plans.Plan) -> Response:
        """The answer of ``plan``, from its cache entry or computed and stored there, gzip compressed
        once (the fast path sends the stored bytes as they are)."""

        async def build() -> bytes:
            args = plan.args + ((await self.has_trigram(),) if plan.trigram else ())
            async with self.pool.connection() as conn:
                body = orjson.dumps(await plan.query(conn, *args), default=_number)
            return await compress(body)

        return encoded(request, await self.cache.cached(plan.cache, plan.key, plan.ttl, build))

    async def has_trigram(self) -> bool:
        if self.trigram is None:
            async with self.pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) AS n FROM pg_extension WHERE extname = 'pg_trgm'")
                self.trigram = (await cur.fetchone())["n"] > 0
        return self.trigram


def state(request: Request) -> State:
    return request.app.state.flowlens


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


async def current_user(request: Request) -> User:
    """Authenticated and counted against the rate limits (dependency of every data route); the fast
    path has done it already for a cache miss it passes on."""
    user = request.scope.get(USER_SCOPE_KEY)
    if user is not None:
        return user
    return await state(request).auth.authorize(bearer(request), client_address(request))


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise ApiError(403, f"role: this needs the admin role; {user.username} is a {user.role}", "role")
    return user


# async: FastAPI runs a plain-def dependency in a worker thread, a thread hop on every request
async def common_filters(
    since: Annotated[str | None, Query(description="ISO 8601 start (UTC when no zone)")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 end (exclusive)")] = None,
    prefix: Annotated[str | None, Query(description="CIDR: either end of an edge inside it")] = None,
    port: Annotated[str | None, Query(description="service (server) port 0-65535")] = None,
    protocol: Annotated[str | None, Query(description="number 0-255 or tcp, udp, icmp, ...")] = None,
    owner: Annotated[str | None, Query(description="inventory owner")] = None,
    environment: Annotated[str | None, Query(description="inventory environment")] = None,
    tag: Annotated[str | None, Query(description="inventory tag")] = None,
    asn: Annotated[str | None, Query(description="AS number (64512 or AS64512)")] = None,
    country: Annotated[str | None, Query(description="ISO country code (GeoIP)")] = None,
    min_bytes: Annotated[str | None, Query(description="edges with at least this many bytes in the range")] = None,
) -> params.Filters:
    return params.filters(since, until, prefix, port, protocol, owner, environment, tag, asn, country, min_bytes)


Filters = Annotated[params.Filters, Depends(common_filters)]
Authed = Annotated[User, Depends(current_user)]


def json(payload: object | bytes, status: int = 200) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload, default=_number)
    return Response(body, status_code=status, media_type=JSON)


def _number(value: object) -> int | float:
    """numeric from PostgreSQL (sums) as a JSON number."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encoded(request: Request, gzipped: bytes, br: bytes | None = None) -> Response:
    """A cached gzip body sent as br, gzip or identity, as the client accepts."""
    accept = request.headers.get("accept-encoding", "")
    headers = {"Vary": "Accept-Encoding"}
    if br is not None and "br" in accept:
        return Response(br, media_type=JSON, headers={**headers, "Content-Encoding": "br"})
    if "gzip" in accept:
        return Response(gzipped, media_type=JSON, headers={**headers, "Content-Encoding": "gzip"})
    return Response(gzip.decompress(gzipped), media_type=JSON, headers=headers)


async def compress(body: bytes) -> bytes:
    """gzip, in a thread for a large body (zlib lets go of the GIL; the event loop keeps serving)."""
    if len(body) < 256 * 1024:
        return gzip.compress(body, GZIP_LEVEL)
    return await anyio.to_thread.run_sync(gzip.compress, body, GZIP_LEVEL)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    st: State = app.state.flowlens
    await st.pool.open(wait=False)  # PostgreSQL down at start: requests answer 503 until it is back
    st.hub.start()
    try:
        yield
    finally:
        await st.hub.stop()
        await st.pool.close()
        await st.cache_store.close()
        await st.session_store.close()


class FlowLensApp(FastAPI):
    """FastAPI with the fast path (``fast.py``) in front of its whole middleware stack: a cached answer
    is sent before Starlette's error handling and FastAPI's telemetry and body-limit layers run, which
    cost a hit more than the rest of its work (py-spy under ``flowlens bench api``)."""

    fast_path: FastPath

    async def __call__(self, scope, receive, send) -> None:
        get = scope["type"] == "http" and scope["method"] == "GET"
        if not (get and await self.fast_path.serve(self.state.flowlens, scope, send)):
            await super().__call__(scope, receive, send)


def create_app(cfg: FlowLensConfig | None = None) -> FastAPI:
    """The ASGI app for ``cfg`` (default: the FlowLens config from file and environment)."""
    cfg = cfg or load_config()
    app = FlowLensApp(
        title="FlowLens query API",
        version="1",
        description="Topology, search, asset detail, impact and changes of the FlowLens map. "
        "Authenticate with POST /api/v1/login, then send `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    app.state.flowlens = State(cfg)
    errors.install(app)
    app.add_middleware(GZipMiddleware, minimum_size=4096)
    app.add_middleware(MetricsMiddleware)
    app.fast_path = FastPath()  # before everything: cached answers skip the rest
    app.include_router(routes())
    mount_console(app)  # last: the console takes every path the API does not
    return app


class MetricsMiddleware:
    """``flowlens_api_requests_total`` and ``flowlens_api_latency_seconds`` per route template."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.requests_of(endpoint, scope["method"], status[0]).inc()
            metrics.latency_of(endpoint, scope["method"]).observe(time.perf_counter() - began)


def routes():
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @router.get(f"{API}/health")
    async def health(request: Request) -> Response:
        """`{"postgres": "ok", "redis": "ok" | "not used"}`; 503 when one is down."""
        st = state(request)
        async with st.pool.connection() as conn:
            await conn.execute("SELECT 1")
        if st.redis:
            await st.session_store.client.ping()
        return json({"postgres": "ok", "redis": "ok" if st.redis else "not used (minimal mode)"})

    @router.post(f"{API}/login")
    async def login(body: Login, request: Request) -> Response:
        """Body `{"username", "password"}` → `{"token", "expires_in", "user": {"id", "username", "role"}}`.

        401 on a wrong name or password; repeated failures are slowed (see README).
        """
        st = state(request)
        await st.auth.limit(None, client_address(request))
        return json(await st.auth.login(body.username, body.password, client_address(request)))

    @router.post(f"{API}/logout")
    async def logout(request: Request, user: Authed) -> Response:
        """Ends the session of the bearer token → `{"ok": true}`."""
        await state(request).auth.logout(bearer(request) or "")
        return json({"ok": True})

    @router.get(f"{API}/me")
    async def me(user: Authed) -> Response:
        """`{"id", "username", "role"}` of the token's user."""
        return json(user.as_json())

    @router.get(f"{API}/topology")
    async def topology(
        request: Request,
        user: Authed,
        f: Filters,
        group: Annotated[str, Query(description="address | subnet | asn | owner | environment")] = "subnet",
        prefix_len: Annotated[int | None, Query(ge=0, le=128, description="subnet grouping prefix length")] = None,
        limit: Annotated[int | None, Query(description="edges per page (1..api.max_page)")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        with_bytes: Annotated[bool, Query(alias="bytes", description="grouped: edges also sum their bytes")] = False,
    ) -> Response:
        """Nodes and edges. `group=address`: nodes are assets (addr, name, hostname, owner, environment,
        tags, known, country, city, asn, as_org, first_seen, last_seen), edges are dependencies
        (client, server, port, protocol, first_seen, last_seen), in key order. Grouped: nodes
        `{"id", "assets"}`, edges `{"source", "target", "dependencies", "first_seen", "last_seen"}`,
        most dependencies first; with `bytes=true` also `"bytes"`: their traffic in the time range (all
        time without one; slower: it reads the rollups and flow_stats of the range).
        Answer: `{"level", "nodes", "edges", "next_cursor"}`.

        Without filters, `group=subnet` (default prefixes /24 and /64) and no cursor this is the full map,
        served from the cache `topology:full` (gzip or br), with bytes; any other page is cached as
        `topology:<group>|<filters, limit, cursor>` (`api.topology_ttl_seconds`).
        """
        st = state(request)
        plan = plans.topology(st.api, f, group, prefix_len, limit, cursor, with_bytes)
        if plan.query is None:
            return await full_topology(request, st)
        return await st.cached_query(request, plan)

    async def full_topology(request: Request, st: State) -> Response:
        async def build() -> bytes:
            async with st.pool.connection() as conn:
                answer = await queries.topology_grouped(
                    conn, params.Filters(), "subnet", 10**9, 0, st.api.full_topology_prefix_v4,
                    st.api.full_topology_prefix_v6, with_bytes=True,
                )  # fmt: skip
            return await anyio.to_thread.run_sync(gzip.compress, orjson.dumps(answer, default=_number), GZIP_LEVEL)

        gzipped = await st.cache.cached("topology", "topology:full", st.api.topology_ttl_seconds, build)
        br = None
        if "br" in request.headers.get("accept-encoding", ""):
            br = await st.cache.cached(
                "topology", "topology:full:br", st.api.topology_ttl_seconds,
                lambda: anyio.to_thread.run_sync(lambda: brotli.compress(gzip.decompress(gzipped), quality=5)),
            )  # fmt: skip
        return encoded(request, gzipped, br)

    @router.get(f"{API}/search")
    async def search(
        request: Request,
        user: Authed,
        f: Filters,
        q: Annotated[
            str | None,
            Query(description="address, CIDR prefix, AS number (AS64512) or text (hostname, name, owner, tag)"),
        ] = None,
        limit: Annotated[int | None, Query(description="results per page")] = None,
        cursor: Annotated[str | None, Query()] = None,
    ) -> Response:
        """Assets matching `q` and the filters, best first: `{"results": [asset + "score"], "next_cursor"}`.

        Hostnames and names match by substring (pg_trgm index), ranked exact match first, then by similarity.
        """
        st = state(request)
        return await st.cached_query(request, plans.search(st.api, q, f, limit, cursor))

    @router.get(f"{API}/assets/{{addr}}")
    async def asset(
        request: Request,
        user: Authed,
        addr: str,
        f: Filters,
        limit: Annotated[int | None, Query(description="dependencies per direction")] = None,
    ) -> Response:
        """`{"asset", "dependencies_in": [{client, port, protocol, first_seen, last_seen, bytes}],
        "dependencies_in_total", "dependencies_out": [{server, ...}], "dependencies_out_total",
        "series": {"step": "5m" | "1h", "points": [{t, bytes, packets, flows}]}}`; bytes and the series
        cover `since`..`until` (default: the last day). Cached as `asset:<addr>` (`api.asset_ttl_seconds`)."""
        st = state(request)
        return await st.cached_query(request, plans.asset(st.api, addr, f, limit))

    @router.get(f"{API}/impact")
    async def impact(
        request: Request,
        user: Authed,
        target: Annotated[str, Query(description="addr, addr:port or addr:port/proto (IPv6: [addr]:port)")],
        depth: Annotated[int, Query(description="hops, 1-6")] = 3,
        max_nodes: Annotated[
            int | None, Query(description="fan-out limit (default 1000, at most api.impact_max_nodes)")
        ] = None,
    ) -> Response:
        """What is affected if `target` goes away: `{"target", "depth", "count", "by_depth", "truncated",
        "message", "affected": [{"addr", "name", "hostname", "depth", "via": {"server", "port", "protocol"},
        "path": [target, ..., addr]}]}`. Cached as `impact:<target>:depth-<n>`."""
        st = state(request)
        return await st.cached_query(request, plans.impact(st.api, target, depth, max_nodes))

    @router.get(f"{API}/changes")
    async def changes(
        request: Request,
        user: Authed,
        f: Filters,
        kind: Annotated[str | None, Query(description="comma list: new_asset, new_dependency, dependency_gone")] = None,
        limit: Annotated[int | None, Query()] = None,
        cursor: Annotated[str | None, Query()] = None,
    ) -> Response:
        """Newest first: `{"changes": [{"id", "window_start", "kind", "subject", "addr", "client", "server",
        "server_port", "protocol", "details", "detected_at"}], "next_cursor"}`."""
        st = state(request)
        size = params.limit(limit, 100, st.api.max_page)
        before = params.decode_cursor(cursor, 1)
        async with st.pool.connection() as conn:
            return json(await queries.changes(conn, f, kinds(kind), size, before[0] if before else None))

    @router.get(f"{API}/users")
    async def users(request: Request, user: Annotated[User, Depends(admin_user)]) -> Response:
        """Admin only: `{"users": [{"id", "username", "role", "created_at", "tokens"}]}`."""
        from flowlens_dagster.api.auth import list_users

        dsn = state(request).cfg.postgres.dsn()
        return json({"users": await anyio.to_thread.run_sync(list_users, dsn)})

    @router.websocket(f"{API}/changes/ws")
    async def changes_ws(websocket: WebSocket) -> None:
        """Live changes. Query: `token` (or an Authorization header), `channels` (topology,alerts),
        `kind`, `prefix`, `port`, `protocol`, `last_id` (replay what was missed). Messages: the change
        rows of GET /api/v1/changes plus `"channel"`."""
        await feed(websocket)

    return router


def kinds(kind: str | None) -> list[str] | None:
    return [k.strip() for k in kind.split(",") if k.strip()] if kind else None


async def feed(websocket: WebSocket) -> None:
    st: State = websocket.app.state.flowlens
    args = websocket.query_params
    try:
        header = websocket.headers.get("authorization", "")
        token = args.get("token") or (header[7:].strip() if header[:7].lower() == "bearer " else None)
        await st.auth.authenticate(token)
        f = params.filters(prefix_=args.get("prefix"), port_=args.get("port"), protocol_=args.get("protocol"))
        wanted = kinds(args.get("kind"))
        queries.change_conditions(f, wanted, {})  # validates the kinds
        names = kinds(args.get("channels")) or ["topology", "alerts"]
        unknown = [n for n in names if f"changes:{n}" not in CHANNELS]
        if unknown:
            raise bad("channels", f"must be topology and/or alerts, got {','.join(unknown)!r}")
        last_id = args.get("last_id")
        if last_id is not None and not last_id.isdigit():
            raise bad("last_id", f"must be the id of the last change received (an integer), got {last_id!r}")
    except ApiError as exc:
        await websocket.accept()
        await websocket.send_text(orjson.dumps({"error": exc.message, "parameter": exc.parameter}).decode())
        await websocket.close(code=4401 if exc.status == 401 else 4400)
        return
    sub = Subscriber({f"changes:{n}" for n in names}, set(wanted) if wanted else None, f)
    await websocket.accept()
    st.hub.add(sub)
    try:
        sent = await replay(websocket, st, sub, int(last_id)) if last_id is not None else 0
        await forward(websocket, sub, sent)
    except WebSocketDisconnect:
        pass
    finally:
        st.hub.remove(sub)


async def replay(websocket: WebSocket, st: State, sub: Subscriber, after: int) -> int:
    """Send the stored changes after ``after`` (the live queue fills meanwhile); the last id sent."""
    if "changes:topology" not in sub.channels:
        return after
    while True:
        async with st.pool.connection() as conn:
            rows = await queries.changes_after(
                conn, sub.filters, sorted(sub.kinds) if sub.kinds else None, after, REPLAY_PAGE
            )
        for row in rows:
            await websocket.send_text(orjson.dumps({**row, "channel": "changes:topology", "replayed": True}).decode())
            after = row["id"]
        if len(rows) < REPLAY_PAGE:
            return after


async def forward(websocket: WebSocket, sub: Subscriber, sent: int) -> None:
    """Live messages until the client leaves, skipping ids the replay already sent; a client that fell
    too far behind is closed (1013) and resumes with its last id."""

    async def send() -> None:
        while not sub.overflowed:
            ident, text = await sub.queue.get()
            if not (isinstance(ident, int) and ident <= sent):
                await websocket.send_text(text)
        await websocket.close(code=1013, reason="too slow: reconnect with last_id")

    sender = asyncio.create_task(send())
    try:
        while not sender.done():  # clients only listen; anything they send is ignored
            receiving = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait({receiving, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receiving in done and receiving.result()["type"] == "websocket.disconnect":
                return
            if receiving not in done:
                receiving.cancel()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
