"""The API cache (scaling model §5.2, Redis database 2): ``topology:full``, ``search:<q>``,
``impact:<id>:depth-<n>``, each with its TTL, invalidated by generation.

Every processed window bumps a generation (``assets.api_generation``). An entry is stored as
``<generation>\\n<payload>`` and a read returns it only if its generation is the current one, so no
answer is older than the last processed window plus the TTL. One ``MGET`` of the generation and the entry serves a read.

In minimal mode (no Redis) the entries live in process (same keys, same TTLs) and the generation is
the finish time of the last ``topology_changes`` window load in PostgreSQL, read at most once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from assets.api_generation import API_GENERATION_KEY
from flowlens_dagster.api.metrics import CACHE_HITS, CACHE_MISSES
from flowlens_dagster.api.store import Store


class Cache:
    def __init__(self, store: Store, pg_generation: Callable[[], Awaitable[str]] | None = None):
        self.store = store
        self.pg_generation = pg_generation  # minimal mode: the generation comes from PostgreSQL
        self._pg_seen: tuple[float, str] = (0.0, "")
        self._building: dict[str, asyncio.Lock] = {}

    async def _generation_and(self, key: str) -> tuple[bytes, bytes | None]:
        if self.pg_generation is None:
            generation, value = await self.store.mget([API_GENERATION_KEY, key])
            return generation or b"0", value
        checked, generation = self._pg_seen
        if time.monotonic() - checked > 1.0:
            generation = await self.pg_generation()
            self._pg_seen = (time.monotonic(), generation)
        return generation.encode(), await self.store.get(key)

    async def get(self, cache: str, key: str) -> tuple[bytes | None, bytes]:
        """(payload or None, current generation); counts a hit or a miss for ``cache``."""
        generation, value = await self._generation_and(key)
        if value is not None:
            stored, _, payload = value.partition(b"\n")
            if stored == generation:
                CACHE_HITS.labels(cache).inc()
                return payload, generation
        CACHE_MISSES.labels(cache).inc()
        return None, generation

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
        if not lock.locked():
            self._building.pop(key, None)
        return payload
