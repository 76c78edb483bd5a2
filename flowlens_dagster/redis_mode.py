"""Auto mode's Redis, chosen at run time by the query API (the rule: :mod:`ingest.scaling.redis_rule`).

In auto mode each API process starts with its cache, sessions and rate limits in process and its
change feed polling ``flowlens.changes``; every ``thresholds.redis.check_seconds`` it measures

- the flow rate: flows of the newest processed window (``window_loads`` of ``enriched_flows``) / 300 s,
- the users: ``flowlens.api_users`` in PostgreSQL,
- its p99 latency since the previous check, from its own ``flowlens_api_latency_seconds`` histogram,
- its open WebSocket clients, and ``api.workers``,

and switches when the rule says so. A switch loses no session and no change:

- sessions, rate-limit counters and login-failure counts are copied with their remaining TTL to the
  other side (Redis database ``api.session_db``, or the process) before requests use it; cache
  entries are not copied (the generation check would reject most of them anyway; they rebuild);
- the change feed resumes from the id of the last change it delivered: on Redis it subscribes first,
  then reads the changes stored meanwhile from ``flowlens.changes``, and skips ids already sent.

A switch to a Redis that does not answer is not taken (logged; tried again on the next check). Each
switch is logged, counted (``flowlens_api_redis_switches_total{from="memory",to="redis"}`` and back, on
the API's ``/metrics``: a series of its own, so the landing's ``flowlens_mode_switches_total`` and its
flapping alert count landing switches only) and published as JSON (``"kind": "redis_switch"``) on
``changes:alerts``.
Each process records its decision in ``flowlens.redis_use`` at every check (:mod:`ingest.scaling.redis_use`):
the pipeline publishes changes, alerts and the cache generation on Redis only while an API process
uses it. A switch to Redis bumps the cache generation itself, since the pipeline did not bump it
while no API used Redis: entries left from an earlier Redis period are never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter

from assets.api_generation import API_GENERATION_KEY
from flowlens_dagster.api import metrics
from flowlens_dagster.api.store import CachePeek, Front, MemoryStore, RedisStore
from flowlens_dagster.api.ws import CHANNELS, Hub
from ingest.scaling.alerts import ALERTS_CHANNEL
from ingest.scaling.redis_rule import REDIS, RedisDecider, RedisSignals, RedisSwitch, p99_ms
from ingest.scaling.redis_use import FORGET_SQL, RECORD_SQL, api_instance, record_params
from ingest.window import WINDOW_SECONDS

log = logging.getLogger("flowlens.api.redis_mode")
SWITCHES = Counter("flowlens_api_redis_switches_total", "Auto mode switches of the API's Redis use", ["from", "to"])
RATE_SQL = (
    "SELECT rows_read FROM flowlens.window_loads WHERE asset = 'enriched_flows' ORDER BY window_start DESC LIMIT 1"
)
USERS_SQL = "SELECT count(*) AS n FROM flowlens.api_users"


class SwitchableStore:
    """The API's :class:`~flowlens_dagster.api.store.Store`, on Redis or in process: whichever is current."""

    def __init__(self, memory: MemoryStore, redis: RedisStore):
        self.memory, self.redis = memory, redis
        self.current: MemoryStore | RedisStore = memory

    async def get(self, key: str) -> bytes | None:
        return await self.current.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return await self.current.mget(keys)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self.current.set(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self.current.delete(key)

    async def incr(self, keys: list[str], ttl: int) -> list[tuple[int, int]]:
        return await self.current.incr(keys, ttl)

    async def session_and_count(
        self, session_key: str, ip_key: str, user_prefix: str, ttl: int, cache: CachePeek | None = None
    ) -> Front:
        return await self.current.session_and_count(session_key, ip_key, user_prefix, ttl, cache)

    async def close(self) -> None:
        await self.memory.close()
        await self.redis.close()


async def to_redis(memory: MemoryStore, redis: RedisStore) -> int:
    """Copy every live in-process entry to Redis with its remaining TTL; the number copied."""
    now, copied = time.monotonic(), 0
    async with redis.client.pipeline(transaction=False) as pipe:
        for key, (expires, value) in list(memory.data.items()):
            ms = int((expires - now) * 1000)
            if ms > 0:
                pipe.set(key, str(value).encode() if isinstance(value, int) else value, px=ms)
                copied += 1
        await pipe.execute()
    return copied


async def to_memory(redis: RedisStore, memory: MemoryStore) -> int:
    """Copy every key of the Redis database (sessions, limits, login failures) into the process."""
    now, copied = time.monotonic(), 0
    async for key in redis.client.scan_iter(count=1000):
        async with redis.client.pipeline(transaction=False) as pipe:
            value, ms = await pipe.get(key).pttl(key).execute()
        if value is None or ms == -2:
            continue
        expires = now + (ms / 1000 if ms > 0 else 86_400 * 365)
        memory.data[key.decode()] = (expires, int(value) if value.isdigit() else value)
        copied += 1
    return copied


class SwitchingHub(Hub):
    """The change feed's hub, switchable between Redis pub/sub and polling without a gap or a repeat."""

    def __init__(self, redis_url: str, poll_latest):
        super().__init__(None, poll_latest)
        self.url = redis_url
        self.last_id: int | None = None  # the newest change delivered
        self._switched = asyncio.Event()

    def use(self, on_redis: bool) -> None:
        self.redis_url = self.url if on_redis else None
        self._switched.set()

    def broadcast(self, message: dict) -> None:
        ident = message.get("id")
        if message.get("channel") == "changes:topology" and isinstance(ident, int):
            if self.last_id is not None and ident <= self.last_id:
                return  # delivered already (the catch-up read it, or the other source did)
            self.last_id = ident
        super().broadcast(message)

    async def _run_forever(self) -> None:
        while True:
            self._switched.clear()
            source = asyncio.create_task(super()._run_forever())
            try:
                await self._switched.wait()
            finally:  # switched, or the hub is stopping
                source.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await source

    async def _catch_up(self) -> None:
        """Deliver what ``flowlens.changes`` holds after the last change delivered."""
        if self.last_id is None:
            rows = await self.poll_latest(-1)
            self.last_id = max((r["id"] for r in rows), default=0)
            return
        while rows := await self.poll_latest(self.last_id):
            for row in rows:
                self.broadcast({**orjson.loads(orjson.dumps(row)), "channel": "changes:topology"})

    async def _listen_redis(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(*CHANNELS)  # first: what is published from now on is buffered
                await self._catch_up()
                async for item in pubsub.listen():
                    if item["type"] == "message":
                        self._deliver(item["channel"].decode(), item["data"])
        finally:
            await client.aclose()

    async def _poll(self) -> None:
        while True:
            await self._catch_up()
            await asyncio.sleep(1.0)


class RedisMode:
    """Measures the signals, decides with :class:`~ingest.scaling.redis_rule.RedisDecider`, switches."""

    def __init__(self, st: Any):
        self.st, self.cfg = st, st.cfg
        self.decider = RedisDecider(self.cfg.thresholds.redis, time.monotonic())
        self._latency_seen = self._latency()
        self.switches: list[dict] = []
        self.task: asyncio.Task | None = None
        self.instance = api_instance()
        self.reason = "no Redis trigger yet"  # why the current side (recorded in flowlens.redis_use)

    @property
    def using(self) -> str:
        return self.decider.using

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):  # PostgreSQL down: the row goes stale instead
            async with self.st.pool.connection() as conn:
                await conn.execute(FORGET_SQL, {"instance": self.instance})

    async def record(self) -> None:
        """This process's current side in ``flowlens.redis_use``, for the pipeline to follow."""
        async with self.st.pool.connection() as conn:
            await conn.execute(RECORD_SQL, record_params(self.instance, self.using == REDIS, self.reason))

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL down: no decision this time
                log.warning("redis mode: no decision this round (%s)", exc)
            await asyncio.sleep(self.cfg.thresholds.redis.check_seconds)

    async def signals(self) -> RedisSignals:
        async with self.st.pool.connection() as conn:
            row = await (await conn.execute(RATE_SQL)).fetchone()
            users = (await (await conn.execute(USERS_SQL)).fetchone())["n"]
        latency = self._latency()
        p99 = p99_ms(LATENCY_BOUNDS, self._latency_seen, latency)
        self._latency_seen = latency
        return RedisSignals(
            flows_per_s=None if row is None else row["rows_read"] / WINDOW_SECONDS,
            users=int(users),
            api_p99_ms=p99,
            websocket_clients=len(self.st.hub.subscribers),
            api_processes=self.cfg.api.workers,
        )

    @staticmethod
    def _latency() -> list[float]:
        """This process's cumulative request counts per latency bucket (every endpoint summed)."""
        sums = dict.fromkeys(LATENCY_BOUNDS, 0.0)
        for family in metrics.LATENCY.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    sums[float(sample.labels["le"])] += sample.value
        return [sums[b] for b in LATENCY_BOUNDS]

    async def check(self) -> RedisSwitch | None:
        """One decision, recorded in ``flowlens.redis_use``; the switch made, if any."""
        switch = self.decider.decide(time.monotonic(), await self.signals())
        if switch is not None:
            try:
                copied = await self._apply(switch.target)
            except Exception as exc:
                log.warning("redis mode: %s -> %s wanted (%s) but Redis does not answer (%s); staying on %s",
                            switch.source, switch.target, switch.reason, exc, switch.source)  # fmt: skip
                switch = None
            else:
                self.decider.commit(switch)
                self.reason = switch.reason
                await self._tell(switch, copied)
        await self.record()
        return switch

    async def _apply(self, target: str) -> int:
        st = self.st
        sessions, cache = st.session_store, st.cache_store
        if target == REDIS:
            await sessions.redis.client.ping()
            copied = await to_redis(sessions.memory, sessions.redis)
            # the pipeline bumps api:generation only while an API uses Redis: entries from an earlier
            # Redis period may carry the generation still current, so a new one starts here
            await cache.redis.client.incr(API_GENERATION_KEY)
            sessions.current, cache.current = sessions.redis, cache.redis
            st.cache.pg_generation = None  # from now on the pipeline bumps api:generation in Redis
        else:
            copied = await to_memory(sessions.redis, sessions.memory)
            sessions.current, cache.current = sessions.memory, cache.memory
            st.cache.pg_generation = st.last_window
        st.redis = target == REDIS
        st.hub.use(target == REDIS)
        return copied

    async def _tell(self, switch: RedisSwitch, copied: int) -> None:
        event = {
            "kind": "redis_switch",
            "at": datetime.now(UTC).isoformat(),
            "from": switch.source,
            "to": switch.target,
            "reason": switch.reason,
            "signals": switch.signals.as_dict(),
            "sessions_copied": copied,
        }
        self.switches.append(event)
        log.info("redis mode: API switched %s -> %s (%s); %d session entries copied",
                 switch.source, switch.target, switch.reason, copied)  # fmt: skip
        SWITCHES.labels(switch.source, switch.target).inc()
        client = self.st.session_store.redis.client
        with contextlib.suppress(Exception):  # a switch away from a Redis that is down is still a switch
            await client.publish(ALERTS_CHANNEL, orjson.dumps(event))


LATENCY_BOUNDS = (*metrics.LATENCY_BUCKETS, float("inf"))


def attach(st: Any) -> None:
    """Auto mode's hook into the API's per-process state (``st``, opened with Redis stores): switchable
    stores, hub and the deciding task, started and stopped with the hub by the API's lifespan."""
    cfg = st.cfg
    st.cache_store = SwitchableStore(MemoryStore(), st.cache_store)
    st.session_store = SwitchableStore(MemoryStore(), st.session_store)
    st.cache.store, st.auth.store = st.cache_store, st.session_store
    st.hub = SwitchingHub(cfg.redis.url(), st.changes_since)
    st.redis_mode = mode = RedisMode(st)
    if cfg.api.workers > 1:  # processes share nothing in process: Redis from the first request on
        mode.decider.using, mode.reason = REDIS, f"{cfg.api.workers} API processes share one cache"
        st.cache_store.current, st.session_store.current = st.cache_store.redis, st.session_store.redis
        st.hub.redis_url, st.redis = st.hub.url, True
    else:
        st.cache.pg_generation, st.redis = st.last_window, False
    hub_start, hub_stop = st.hub.start, st.hub.stop

    def start() -> None:
        hub_start()
        mode.start()

    async def stop() -> None:
        await mode.stop()
        await hub_stop()

    st.hub.start, st.hub.stop = start, stop
