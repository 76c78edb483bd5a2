"""The live change feed: ``/api/v1/changes/ws`` forwards ``changes:topology`` and ``changes:alerts``.

One hub per worker process listens once (Redis pub/sub, or in minimal mode a one-second poll of
``flowlens.changes`` for ids above the last seen) and fans each message out to its clients' queues,
filtered per client. A client connecting with ``last_id`` first gets every stored change with a
higher id (from the ``changes`` table, oldest first), then the live ones it has not seen yet: live
messages are queued from before the replay starts, and ids already replayed are skipped, so nothing
is lost or repeated across a reconnect. A client too slow to keep up (its queue full) is closed with
code 1013 and can resume with its last id.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis

from flowlens_dagster.api import metrics
from flowlens_dagster.api.params import Filters

log = logging.getLogger("flowlens.api.ws")
CHANNELS = ("changes:topology", "changes:alerts")
QUEUE_SIZE = 1000
POLL_SECONDS = 1.0


@dataclass(eq=False)
class Subscriber:
    """One WebSocket client: its filters and its queue of (id, JSON text) messages."""

    channels: set[str]
    kinds: set[str] | None
    filters: Filters
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None  # filters.prefix, parsed once

    def __post_init__(self) -> None:
        if self.filters.prefix is not None:
            self.network = ipaddress.ip_network(self.filters.prefix)

    def wants(self, message: dict) -> bool:
        if message.get("channel") not in self.channels:
            return False
        if self.kinds is not None and message.get("kind") not in self.kinds:
            return False
        f = self.filters
        if f.port is not None and message.get("server_port") != f.port:
            return False
        if f.protocol is not None and message.get("protocol") != f.protocol:
            return False
        if self.network is not None:
            ends = [message.get(k) for k in ("addr", "client", "server") if message.get(k)]
            return any(ipaddress.ip_address(e) in self.network for e in ends)
        return True


class Hub:
    """Receives each change once per process and hands it to every interested subscriber."""

    def __init__(self, redis_url: str | None, poll_latest: Callable[[int], Awaitable[list[dict]]]):
        self.redis_url = redis_url
        self.poll_latest = poll_latest  # minimal mode: changes with id above the argument
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run_forever())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)
        metrics.WEBSOCKETS.inc()

    def remove(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            metrics.WEBSOCKETS.dec()

    def broadcast(self, message: dict) -> None:
        """Queue ``message`` for every subscriber that wants it, encoded once for all of them."""
        text = None
        for sub in list(self.subscribers):
            if not sub.wants(message):
                continue
            text = text or orjson.dumps(message).decode()
            try:
                sub.queue.put_nowait((message.get("id"), text))
            except asyncio.QueueFull:
                sub.overflowed = True

    async def _run_forever(self) -> None:
        while True:  # the source went away (Redis restart, PostgreSQL down): retry, never give up
            try:
                await (self._listen_redis() if self.redis_url else self._poll())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change feed source failed (%s); retrying in 2 s", exc)
                await asyncio.sleep(2)

    async def _listen_redis(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(*CHANNELS)
                async for item in pubsub.listen():
                    if item["type"] == "message":
                        self._deliver(item["channel"].decode(), item["data"])
        finally:
            await client.aclose()

    def _deliver(self, channel: str, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = {"text": data.decode(errors="replace")}
        if not isinstance(message, dict):
            message = {"value": message}
        message["channel"] = channel
        self.broadcast(message)

    async def _poll(self) -> None:
        last = None
        while True:
            rows = await self.poll_latest(-1 if last is None else last)
            if last is None:  # first poll: start from the newest id, do not replay history
                last = max((r["id"] for r in rows), default=0)
                rows = []
            for row in rows:
                last = max(last, row["id"])
                self.broadcast({**orjson.loads(orjson.dumps(row)), "channel": "changes:topology"})
            await asyncio.sleep(POLL_SECONDS)
