"""The API cache (scaling model §5.2, Redis database 2): ``topology:full``, ``search:<q>``,
``impact:<id>:depth-<n>``, each with its TTL, invalidated by generation.

Every processed window bumps a generation (``assets.api_generation``). An entry is stored as
``<generation>\\n<payload>`` and a read returns it only if its generation is the current one, so no
answer is older than the last processed window plus the TTL. One ``MGET`` of the generation and the entry serves a read.

In minimal mode (no Redis) the entries live in process (same keys, same TTLs) and the generation is
the finish time of the last ``topology_changes`` window load in PostgreSQL, read at most once a second.

With Redis each worker also keeps a copy of the entries it served (at most ``LOCAL_BYTES``): the
request's round trip (``store.SESSION_AND_COUNT``) still reads the generation and whether the entry
is there, and sends the entry itself only when the copy is not of that generation. A copy is only
served while its Redis entry exists (so not past its TTL, nor after the entry is deleted) and is of
the current generation, so the guarantee above holds, and a large answer (an impact walk is ~200 kB
of JSON) crosses from Redis once per worker, not on every hit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from assets.api_generation import API_GENERATION_KEY
from flowlens_dagster.api.metrics import CACHE_HITS, CACHE_MISSES
from flowlens_dagster.api.store import CachePeek, Front, Store

LOCAL_BYTES = 64 * 2**20


class Cache:
    def __init__(self, store: Store, pg_generation: Callable[[], Awaitable[str]] | None = None, db: int = 2):
        self.store, self.db = store, db
        self.pg_generation = pg_generation  # minimal mode: the generation comes from PostgreSQL
        self._pg_seen: tuple[float, str] = (0.0, "")
        self._building: dict[str, asyncio.Lock] = {}
        self.local: dict[str, tuple[bytes, float, bytes]] = {}  # key -> (generation, expires, payload)
        self._local_bytes = 0

    def peek_request(self, key: str) -> CachePeek | None:
        """What the request's Redis round trip should read of ``key`` (None in minimal mode: the cache
        is in process, read it with :meth:`peek`)."""
        if self.pg_generation is not None:
            return None
        copy = self.local.get(key)
        have = copy[0].decode() if copy is not None and copy[1] > time.monotonic() else ""
        return CachePeek(API_GENERATION_KEY, key, self.db, have)

    def from_front(self, key: str, front: Front) -> bytes | None:
        """The payload of ``key`` the round trip found, or this worker's copy it confirmed; None: a miss."""
        if front.entry_ttl_ms <= 0:  # no entry (or one without expiry, which this cache never writes)
            return None
        copy = self.local.get(key)
        if front.entry is None and copy is not None and copy[0] == front.generation:
            return copy[2]
        stored, _, payload = (front.entry or b"").partition(b"\n")
        if front.entry is None or stored != front.generation:
            return None
        self._keep(key, stored, payload, front.entry_ttl_ms / 1000)
        return payload

    def _keep(self, key: str, generation: bytes, payload: bytes, seconds: float) -> None:
        old = self.local.pop(key, None)
        self._local_bytes -= len(old[2]) if old else 0
        while self.local and self._local_bytes + len(payload) > LOCAL_BYTES:
            self._local_bytes -= len(self.local.pop(next(iter(self.local)))[2])  # the oldest copy
        self.local[key] = (generation, time.monotonic() + seconds, payload)
        self._local_bytes += len(payload)

    async def _generation_and(self, key: str) -> tuple[bytes, bytes | None]:
        if self.pg_generation is None:
            generation, value = await self.store.mget([API_GENERATION_KEY, key])
            return generation or b"0", value
        checked, generation = self._pg_seen
        if time.monotonic() - checked > 1.0:
            generation = await self.pg_generation()
            self._pg_seen = (time.monotonic(), generation)
        return generation.encode(), await self.store.get(key)

    async def peek(self, key: str) -> tuple[bytes | None, bytes]:
        """(payload or None, current generation), not counted."""
        generation, value = await self._generation_and(key)
        stored, _, payload = (value or b"").partition(b"\n")
        return (payload if value is not None and stored == generation else None), generation

    async def get(self, cache: str, key: str) -> tuple[bytes | None, bytes]:
        """(payload or None, current generation); counts a hit or a miss for ``cache``."""
        payload, generation = await self.peek(key)
        (CACHE_MISSES if payload is None else CACHE_HITS).labels(cache).inc()
        return payload, generation

    async def put(self, key: str, payload: bytes, ttl: int, generation: bytes) -> None:
        await self.store.set(key, generation + b"\n" + payload, ttl)

    async def cached(self, cache: str, key: str, ttl: int, build: Callable[[], Awaitable[bytes]]) -> bytes:
        """The cached payload, or ``build()`` stored under ``key`` for ``ttl`` seconds.

        Concurrent misses of one key in this process wait for a single build (a cold full topology
        takes seconds; sixty-four copies of it at once would take PostgreSQL with them)."""
        payload, generation = await self.get(cache, key)
        if payload is not None:
            return payload
        lock = self._building.setdefault(key, asyncio.Lock())
        async with lock:
            value = await self.store.get(key)
            stored, _, ready = (value or b"").partition(b"\n")
            if value is not None and stored == generation:
                return ready  # built by the request this one waited for
            payload = await build()
            await self.put(key, payload, ttl, generation)
            if self.pg_generation is None:
                self._keep(key, generation, payload, ttl)
        if not lock.locked():
            self._building.pop(key, None)
        return payload
