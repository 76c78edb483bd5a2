"""The API bench's load generator, run as its own process (``python -m flowlens_dagster.bench.api_loadgen``).

Phase 1, over HTTP with ``--connections`` keep-alive connections and the mixed query workload: every
distinct request once (warm-up, untimed); then ``--seconds`` back to back, the most the API answers
(requests/s); then ``--seconds`` open loop at ``--paced-rate`` requests/s (default the target, 2,000;
80% of the back-to-back rate when that is less, and ``paced_at`` says so), latencies per kind counted
from when each request was due. (Back to back, a closed loop of 64
connections has a mean latency of 64 / rate by Little's law, whatever the server does, so latency is
measured at a given rate.) Phase 2: the same
mix straight against PostgreSQL through psycopg (the API's own query functions, no HTTP, no cache),
back to back with the same concurrency over as many connections as the API's workers hold: the
same-run baseline. Phase 3: ``--ws`` WebSocket clients subscribe to the change feed, ``--messages``
changes are published to Redis ``changes:topology``, each stamped with its publish time; every client
records publish → receipt. Prints one JSON object.

A request that fails counts as an error of its kind (``error_kinds`` per phase): ``<kind of the mix>:``
``status_<code>`` for an answer other than 200, ``timeout`` when none came in ``ANSWER_TIMEOUT``
seconds, or the exception's name (``ConnectionError``: the server closed the connection).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

import aiohttp
import numpy as np
import orjson
import redis.asyncio as aioredis
import uvloop
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from flowlens_dagster.api import params, queries
from flowlens_dagster.api.cli import raise_open_files
from flowlens_dagster.api.plans import classify

MIX = {"search": 0.3, "impact": 0.2, "topology_filtered": 0.3, "topology_full": 0.1, "asset": 0.1}
ANSWER_TIMEOUT = 30.0  # seconds: an answer not come by then counts as a "timeout" error


def workload(assets: int, servers: int, seed: int = 11) -> dict[str, list[str]]:
    """Request paths per kind: working sets a console's users would repeat (so caches matter as they would)."""
    rnd = random.Random(seed)

    def addr(i: int) -> str:
        return f"10.{1 + i // 65536}.{i // 256 % 256}.{i % 256}"

    search = [f"q=host-{rnd.randrange(assets)}" for _ in range(150)]
    search += [f"q={addr(rnd.randrange(assets))}" for _ in range(100)]
    search += [f"q={addr(rnd.randrange(assets)).rsplit('.', 1)[0]}.0/24&limit=50" for _ in range(50)]
    search += [f"q=AS{64512 + rnd.randrange(50)}&limit=50" for _ in range(20)]
    impact = [f"target={addr(rnd.randrange(servers // 4, servers))}&depth=3" for _ in range(200)]
    filtered = [
        f"group=address&prefix={addr(rnd.randrange(assets)).rsplit('.', 1)[0]}.0/24&limit=200" for _ in range(150)
    ]
    filtered += [f"group=address&port={p}&prefix=10.1.{rnd.randrange(256)}.0/24&limit=200" for p in (443, 5432) * 50]
    filtered += [f"group=owner&environment={e}&limit=500" for e in ("prod", "staging", "dev", "test")]
    asset = [addr(rnd.randrange(assets)) for _ in range(500)]
    return {
        "search": [f"/api/v1/search?{q}" for q in search],
        "impact": [f"/api/v1/impact?{q}" for q in impact],
        "topology_filtered": [f"/api/v1/topology?{q}" for q in filtered],
        "topology_full": ["/api/v1/topology"],
        "asset": [f"/api/v1/assets/{a}?limit=50" for a in asset],
    }


def pick(rnd: random.Random, work: dict[str, list[str]]) -> tuple[str, str]:
    kind = rnd.choices(list(MIX), weights=list(MIX.values()))[0]
    return kind, rnd.choice(work[kind])


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends prepared GET requests and waits for each answer.

    A lean client on purpose: the load generator shares the machine's cores with the API, and a full
    client library (parsing every header, decompressing every body) costs about as much CPU per request
    as the server does. Answers must carry Content-Length (the API's all do); bodies are not decoded.
    """

    open: ClassVar[set[HttpConnection]] = set()  # what the watchdog looks at

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.need: int | None = None
        self.status = 0
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        HttpConnection.open.add(self)

    def connection_lost(self, exc) -> None:
        HttpConnection.open.discard(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    def expire(self, now: float) -> None:
        """Fail the request in flight if its answer is later than ``ANSWER_TIMEOUT``."""
        if self.waiter is not None and not self.waiter.done() and now - self.sent_at > ANSWER_TIMEOUT:
            self.waiter.set_exception(TimeoutError(f"no answer in {ANSWER_TIMEOUT:g} s"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            return  # an answer nobody waits for any more (timed out): the connection is being closed
        self.buffer += data
        if self.need is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self.waiter.set_exception(ConnectionError("an answer without Content-Length"))
                return
            at += len(b"\r\ncontent-length:")
            stop = head.find(b"\r\n", at)
            self.status = int(head[9:12])
            self.need = end + 4 + int(head[at : stop if stop >= 0 else len(head)])
        if len(self.buffer) >= self.need:
            del self.buffer[: self.need]
            self.need = None
            self.waiter.set_result(self.status)

    async def get(self, request: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        self.transport.write(request)
        return await self.waiter


@contextlib.asynccontextmanager
async def watchdog() -> AsyncIterator[None]:
    """While in the block, fail answers later than ``ANSWER_TIMEOUT`` (checked once a second: one timer
    for all connections, not one per request, which would cost the load generator CPU per request)."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            for conn in list(HttpConnection.open):
                conn.expire(now)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


def requests_of(args, work: dict[str, list[str]]) -> dict[str, list[bytes]]:
    """Each path of the workload as the bytes of its GET request (built once, not per request)."""
    host = args.url.split("//", 1)[1]
    head = f"Host: {host}\r\nAuthorization: Bearer {args.token}\r\nAccept-Encoding: gzip\r\n\r\n"
    return {kind: [f"GET {path} HTTP/1.1\r\n{head}".encode() for path in paths] for kind, paths in work.items()}


async def connect(url: str) -> HttpConnection:
    host, _, port = url.split("//", 1)[1].partition(":")
    _, conn = await asyncio.get_running_loop().create_connection(HttpConnection, host, int(port or 80))
    return conn


def error_kind(outcome: int | BaseException) -> str | None:
    """What went wrong with one request (None: a 200): ``status_<code>``, ``timeout`` or the exception's name."""
    if isinstance(outcome, int):
        return None if outcome == 200 else f"status_{outcome}"
    return "timeout" if isinstance(outcome, TimeoutError) else type(outcome).__name__


async def ask(url: str, conn: HttpConnection, request: bytes) -> tuple[str | None, HttpConnection]:
    """One request: (its error kind or None, the connection to go on with: a new one after a failure,
    since the old one may still owe the late answer)."""
    try:
        outcome: int | BaseException = await conn.get(request)
    except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError; TimeoutError: the watchdog
        outcome = exc
    kind = error_kind(outcome)
    if kind is not None and not isinstance(outcome, int):
        conn.transport.close()
        conn = await connect(url)
    return kind, conn


async def warm_up(args, requests: dict[str, list[bytes]]) -> Counter:
    """Every distinct request once, untimed (the cache then holds the working set, as it would after
    a console's users have asked once); the failed answers as ``<kind of the mix>:<error kind>``."""
    distinct = sorted({(kind, r) for kind, rs in requests.items() for r in rs})
    conns = [await connect(args.url) for _ in range(min(8, args.connections))]
    failed: Counter = Counter()

    async def run(conn: HttpConnection, share: list[tuple[str, bytes]]) -> None:
        for kind, request in share:
            error, conn = await ask(args.url, conn, request)
            if error is not None:
                failed[f"{kind}:{error}"] += 1
        conn.transport.close()

    async with watchdog():
        await asyncio.gather(*(run(c, distinct[i :: len(conns)]) for i, c in enumerate(conns)))
    return failed


@dataclass
class Load:
    """What one load phase measured."""

    latencies: dict[str, list[float]]
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    error_kinds: Counter = field(default_factory=Counter)  # "status_503", "timeout", an exception's name


async def drive(args, requests: dict[str, list[bytes]], rate: float | None) -> Load:
    """``--connections`` clients for ``--seconds``: back to back (``rate`` None: the most the server
    answers), or open loop at ``rate`` requests/s in all: request ``i`` is due at ``start + i / rate``
    whatever came back before, the next idle connection sends it, and its latency counts from when it
    was due, so time queued behind slow answers (every connection busy) counts (no coordinated
    omission); a connection stuck on a slow answer does not hold back the schedule of the others."""
    load = Load({k: [] for k in MIX})
    conns = [await connect(args.url) for _ in range(args.connections)]
    start = time.perf_counter() + 0.05
    deadline = start + args.seconds
    tickets = iter(range(10**12))  # the schedule: shared by all connections, taken in order

    async def client(n: int, conn: HttpConnection) -> None:
        rnd = random.Random(n)
        kinds, weights = list(MIX), list(MIX.values())
        while time.perf_counter() < deadline:
            if rate:
                due = start + next(tickets) / rate
                if due >= deadline:
                    break
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            kind = rnd.choices(kinds, weights=weights)[0]
            began = due if rate else time.perf_counter()
            error, conn = await ask(args.url, conn, rnd.choice(requests[kind]))
            load.latencies[kind].append(time.perf_counter() - began)
            load.requests += 1
            if error is not None:
                load.errors += 1
                load.error_kinds[f"{kind}:{error}"] += 1
        conn.transport.close()

    async with watchdog():
        await asyncio.gather(*(client(n, conn) for n, conn in enumerate(conns)))
    load.seconds = time.perf_counter() - start
    return load


SUSTAINED = 0.8  # past the capacity a paced load only measures how fast the queue grows


async def http_phase(args, work) -> tuple[Counter, Load, Load, float]:
    """Warm-up (errors), then the most the API answers, then latency paced at ``--paced-rate`` or, when
    the API answered less than that, at ``SUSTAINED`` of what it answered; the rate offered is returned."""
    requests = requests_of(args, work)
    warm_errors = await warm_up(args, requests)
    most = await drive(args, requests, None)
    rate = min(args.rate, SUSTAINED * most.requests / most.seconds)
    return warm_errors, most, await drive(args, requests, rate), rate


async def direct_phase(args, work) -> dict[str, list[float]]:
    """The same mix through the API's query functions on psycopg connections (no HTTP, no cache)."""
    latencies: dict[str, list[float]] = {k: [] for k in MIX}
    cfg_v4, cfg_v6 = 24, 64
    async with AsyncConnectionPool(
        args.dsn,
        min_size=args.pg_connections,
        max_size=args.pg_connections,
        kwargs={"row_factory": dict_row, "autocommit": True},
    ) as pool:
        deadline = time.perf_counter() + args.seconds

        async def run(kind: str, path: str) -> None:
            query = dict(p.split("=", 1) for p in path.partition("?")[2].split("&") if "=" in p)
            async with pool.connection() as conn:
                if kind == "search":
                    await queries.search(
                        conn, classify(query["q"]), params.Filters(), int(query.get("limit", 50)), 0, True
                    )
                elif kind == "impact":
                    await queries.impact(conn, query["target"], None, None, 3, 1000)
                elif kind == "topology_full":
                    await queries.topology_grouped(conn, params.Filters(), "subnet", 10**9, 0, cfg_v4, cfg_v6)
                elif kind == "asset":
                    await queries.asset_detail(conn, path.rsplit("/", 1)[1].split("?")[0], params.Filters(), 50)
                elif query.get("group") == "address":
                    f = params.filters(prefix_=query.get("prefix"), port_=query.get("port"))
                    await queries.topology_addresses(conn, f, int(query["limit"]), None)
                else:
                    f = params.Filters(environment=query.get("environment"))
                    await queries.topology_grouped(conn, f, query["group"], int(query["limit"]), 0, cfg_v4, cfg_v6)

        async def client(n: int) -> None:
            rnd = random.Random(n)
            while time.perf_counter() < deadline:
                kind, path = pick(rnd, work)
                began = time.perf_counter()
                await run(kind, path)
                latencies[kind].append(time.perf_counter() - began)

        await asyncio.gather(*(client(n) for n in range(args.connections)))
    return latencies


async def ws_phase(args) -> tuple[list[float], int]:
    """Delivery latencies (publish → each client) and how many deliveries never came."""
    delays: list[float] = []
    ws_url = args.url.replace("http", "ws", 1) + f"/api/v1/changes/ws?token={args.token}&channels=topology"
    publisher = aioredis.Redis.from_url(args.redis_url)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = []
        for start in range(0, args.ws, 100):  # connect in waves: the server accepts ~hundreds at once
            sockets += await asyncio.gather(
                *(session.ws_connect(ws_url, heartbeat=None) for _ in range(start, min(start + 100, args.ws)))
            )
        await asyncio.sleep(1.0)
        received = [0] * len(sockets)

        async def listen(i: int, ws) -> None:
            async for message in ws:
                body = orjson.loads(message.data)
                delays.append(time.time() - body["details"]["published_at"])
                received[i] += 1
                if received[i] == args.messages:
                    return

        listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
        for n in range(args.messages):
            change = {
                "id": 10**12 + n,
                "kind": "new_asset",
                "subject": f"bench-{n}",
                "details": {"published_at": time.time()},
            }
            await publisher.publish("changes:topology", orjson.dumps(change))
            await asyncio.sleep(args.message_interval)
        await asyncio.wait(listeners, timeout=30)
        for ws in sockets:
            await ws.close()
    await publisher.aclose()
    return delays, args.ws * args.messages - len(delays)


def p99_ms(values: list[float]) -> float | None:
    return round(float(np.percentile(np.array(values), 99)) * 1000, 2) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flowlens_dagster.bench.api_loadgen")
    for name in ("url", "token", "dsn", "redis-url"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--assets", type=int, required=True)
    parser.add_argument("--servers", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--paced-rate", "--rate", dest="rate", type=float, default=2000.0, help="requests/s of the latency phase"
    )
    parser.add_argument("--pg-connections", type=int, default=16)
    parser.add_argument("--ws", type=int, default=1000)
    parser.add_argument("--no-direct", action="store_true", help="skip the psycopg baseline")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--message-interval", type=float, default=0.25)
    args = parser.parse_args()
    raise_open_files()
    work = workload(args.assets, args.servers)
    warm_errors, most, paced, rate = uvloop.run(http_phase(args, work))
    direct = {k: [] for k in MIX} if args.no_direct else uvloop.run(direct_phase(args, work))
    delays, lost = uvloop.run(ws_phase(args)) if args.ws else ([], 0)
    result = {
        "api": {kind: p99_ms(v) for kind, v in paced.latencies.items()},
        "api_mixed_p99_ms": p99_ms([x for v in paced.latencies.values() for x in v]),
        "paced_requests": paced.requests,
        "paced_rate": round(rate, 1),
        "paced_offered_per_s": round(rate, 1),
        "paced_achieved_per_s": round(paced.requests / paced.seconds, 1) if paced.seconds else 0.0,
        "paced_at": "paced rate" if rate >= args.rate else f"{SUSTAINED:g} of the back-to-back requests/s",
        "paced_seconds": round(paced.seconds, 2),
        "saturated": {kind: p99_ms(v) for kind, v in most.latencies.items()},
        "saturated_mixed_p99_ms": p99_ms([x for v in most.latencies.values() for x in v]),
        "requests": most.requests,
        "errors": sum(warm_errors.values()) + most.errors + paced.errors,
        "error_kinds": {
            "warm_up": dict(warm_errors),
            "saturated": dict(most.error_kinds),
            "paced": dict(paced.error_kinds),
        },
        "seconds": round(most.seconds, 2),
        "direct": {kind: p99_ms(v) for kind, v in direct.items()},
        "direct_mixed_p99_ms": p99_ms([x for v in direct.values() for x in v]),
        "direct_requests": sum(len(v) for v in direct.values()),
        "ws_delivery_p99_ms": p99_ms(delays),
        "ws_deliveries": len(delays),
        "ws_lost": lost,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
