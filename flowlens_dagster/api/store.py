"""Key-value stores behind the cache, sessions and rate limits: Redis, or in process (minimal mode).

Both offer the same few operations with the same key names and TTLs, so the rest of the API does not
know which one it talks to. Redis: one asyncio client per database (scaling model §5.2: db2 the API
cache, db3 sessions and rate limits). In process: a dict with expiry times, per worker process (the
scaling model's §7.1 allows in-memory sessions below 20 users; several workers then do not share it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def mget(self, keys: list[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def incr(self, keys: list[str], ttl: int) -> list[tuple[int, int]]: ...
    async def session_and_count(
        self, session_key: str, ip_key: str, user_prefix: str, ttl: int, cache: CachePeek | None = None
    ) -> Front: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class CachePeek:
    """A cache entry to read along with the session (Redis: in database ``db`` of the same server);
    ``have``: the generation of the caller's own copy of it ("" for none)."""

    generation_key: str
    key: str
    db: int
    have: str = ""


# One round trip per request for authentication, both rate limits and (on a cached route) the cache:
# the session, then the address's and (when the session exists) its user's fixed-window counters,
# then, with KEYS[3] and KEYS[4], the cache generation and entry in the cache database (ARGV[3]) of
# the same server. SELECT inside a script leaves the caller's connection on its own database (Redis 7).
# The entry is only sent when the caller's copy of it is not of the current generation (ARGV[4]);
# its milliseconds to live always are (negative: gone, so the caller's copy is stale too).
# The user key is built in the script from the session's id (fine on one Redis; a cluster would need
# it passed as a key, and the two databases would be one).
SESSION_AND_COUNT = """
local session = redis.call('GET', KEYS[1])
local keys = {KEYS[2]}
if session then table.insert(keys, ARGV[2] .. cjson.decode(session)['id']) end
local out = {session or false, false, false, -2}
for _, key in ipairs(keys) do
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
    table.insert(out, n)
    table.insert(out, redis.call('TTL', key))
end
if KEYS[3] then
    redis.call('SELECT', ARGV[3])
    out[2] = redis.call('GET', KEYS[3]) or '0'
    if out[2] ~= ARGV[4] then out[3] = redis.call('GET', KEYS[4]) end
    out[4] = redis.call('PTTL', KEYS[4])
end
return out
"""


@dataclass
class Front:
    """What one request's round trip found: its session (or None) and the counts of the address's and
    (with a session) its user's windows; on a cached route also the cache generation, the entry unless
    the caller's copy is of that generation, and the entry's milliseconds to live (negative: none)."""

    session: bytes | None
    counts: list[tuple[int, int]]
    generation: bytes = b"0"
    entry: bytes | None = None
    entry_ttl_ms: int = -2


class ScriptBatch:
    """Calls of one script that arrive in the same turn of the event loop go to Redis as one pipeline.

    Under load a worker has dozens of requests in flight, each with its own round trip; pipelining
    them halves redis-py's CPU per call (one write, one read, one pooled connection for the batch)."""

    def __init__(self, client: aioredis.Redis, script: str):
        self.client = client
        self.script = client.register_script(script)
        self.pending: list[tuple[list, list, asyncio.Future]] = []
        self.running: set[asyncio.Task] = set()

    async def __call__(self, keys: list, args: list):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((keys, args, future))
        if len(self.pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.ensure_future(self._run(batch))
        self.running.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self.running.discard)

    async def _run(self, batch: list[tuple[list, list, asyncio.Future]]) -> None:
        try:
            replies = await self._evalsha(batch)
        except Exception as exc:  # Redis down or slow: every caller gets it (and answers 503)
            replies = [exc] * len(batch)
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its request went away meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _evalsha(self, batch: list[tuple[list, list, asyncio.Future]]) -> list:
        """EVALSHA of each call, one pipeline; the script is loaded when Redis does not have it (the
        first call, or after a restart or SCRIPT FLUSH). Sent as plain EVALSHA commands: redis-py's
        Script on a pipeline asks SCRIPT EXISTS before every pipeline, a second round trip per batch."""
        for attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args, _ in batch:
                    pipe.evalsha(self.script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            if attempt or not any(isinstance(r, NoScriptError) for r in replies):
                return replies
            self.script.sha = await self.client.script_load(self.script.script)
        return replies


class RedisStore:
    """One Redis database."""

    def __init__(self, url: str):
        self.client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._session_and_count = ScriptBatch(self.client, SESSION_AND_COUNT)

    async def session_and_count(
        self, session_key: str, ip_key: str, user_prefix: str, ttl: int, cache: CachePeek | None = None
    ) -> Front:
        """The session at ``session_key`` (or None) and the counts of ``ip_key`` and, with a session,
        ``user_prefix + <its user id>``, each one more (fixed windows of ``ttl`` seconds); with ``cache``,
        its generation and entry, in the same round trip."""
        keys, args = [session_key, ip_key], [ttl, user_prefix]
        if cache is not None:
            keys += [cache.generation_key, cache.key]
            args += [cache.db, cache.have]
        reply = await self._session_and_count(keys, args)
        counts = [(int(reply[i]), max(int(reply[i + 1]), 1)) for i in range(4, len(reply), 2)]
        if cache is None:
            return Front(reply[0], counts)
        return Front(reply[0], counts, reply[1], reply[2] or None, int(reply[3]))

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return await self.client.mget(keys)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self.client.set(key, value, ex=ttl)

    async def delete(self, key: str) -> None:
        await self.client.delete(key)

    async def incr(self, keys: list[str], ttl: int) -> list[tuple[int, int]]:
        """Count one more in each key's fixed window: (count so far, seconds until that window ends)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.incr(key)
                pipe.expire(key, ttl, nx=True)
                pipe.ttl(key)
            replies = await pipe.execute()
        return [(int(replies[i]), max(int(replies[i + 2]), 1)) for i in range(0, len(replies), 3)]

    async def close(self) -> None:
        await self.client.aclose()


class MemoryStore:
    """The same operations in this process (minimal mode); expired entries go on access and on a sweep."""

    def __init__(self, max_entries: int = 100_000):
        self.data: dict[str, tuple[float, bytes | int]] = {}
        self.max_entries = max_entries

    def _live(self, key: str) -> bytes | int | None:
        entry = self.data.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self.data[key]
            return None
        return entry[1]

    def _sweep(self) -> None:
        if len(self.data) < self.max_entries:
            return
        now = time.monotonic()
        for key in [k for k, (expires, _) in self.data.items() if expires <= now]:
            del self.data[key]
        while len(self.data) >= self.max_entries:  # still full: forget the oldest insertions
            del self.data[next(iter(self.data))]

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        return str(value).encode() if isinstance(value, int) else value

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [await self.get(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._sweep()
        self.data[key] = (time.monotonic() + ttl, value)

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def incr(self, keys: list[str], ttl: int) -> list[tuple[int, int]]:
        return [self._incr(key, ttl) for key in keys]

    def _incr(self, key: str, ttl: int) -> tuple[int, int]:
        current = self._live(key)
        if current is None:
            self._sweep()
            self.data[key] = (time.monotonic() + ttl, 1)
            return 1, ttl
        expires = self.data[key][0]
        self.data[key] = (expires, int(current) + 1)
        return int(current) + 1, max(round(expires - time.monotonic()), 1)

    async def session_and_count(
        self, session_key: str, ip_key: str, user_prefix: str, ttl: int, cache: CachePeek | None = None
    ) -> Front:
        """As RedisStore's, without the cache part: in process the cache is another store (the caller
        reads it directly)."""
        session = await self.get(session_key)
        keys = [ip_key] + ([user_prefix + str(orjson.loads(session)["id"])] if session else [])
        return Front(session, [self._incr(key, ttl) for key in keys])

    def ttl(self, key: str) -> float | None:
        """Seconds left (tests and introspection)."""
        entry = self.data.get(key)
        return None if entry is None else entry[0] - time.monotonic()

    async def close(self) -> None:
        self.data.clear()
