"""Enrichment caches: Redis keys ``dns:<ip>``, ``geo:<ip>``, ``asset:<ip>`` (the scaling model §5.2), or memory.

One :class:`EnrichmentCache` serves every namespace. With a Redis URL it reads and writes the
shared keys every run and instance sees; without one (minimal mode) it keeps entries in process.
When Redis goes away mid-run, the cache switches to memory for ``retry_seconds`` and tries Redis
again afterwards: a window never fails because of its cache.

Bulk access is the point. A window asks for up to a million addresses at once, and redis-py spends
microseconds of Python per command and per reply. So reads and writes go through two small Lua
scripts, one call per 20,000 keys, whose RESP encoding is built with Polars string operations and
whose reply is one string per call (values joined by newline). That reads ~800k keys/s here against
~350k/s for pipelined MGET through redis-py. Values therefore never contain a newline or ``\\x01``;
the callers store hostnames, JSON and asset names, which do not.

Hits and misses are counted per namespace in ``stats`` and in the Prometheus counters
``flowlens_redis_cache_hits_total{cache}`` / ``flowlens_redis_cache_misses_total{cache}`` (scaling model
§9.1; ``assets.metrics`` flushes them to PostgreSQL for ``flowlens metrics``), whichever backend answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl
import redis

from assets.metrics import CACHE_HITS, CACHE_MISSES

log = logging.getLogger(__name__)

CHUNK = 20_000  # keys per Lua call: large enough to amortize, small enough not to stall Redis
CALLS_IN_FLIGHT = 8  # Lua calls sent before their replies are read
_MISSING = "\x01"
_GET_SCRIPT = b"""
local out = {}
local n = #KEYS
for s = 1, n, 5000 do
  local vals = redis.call('MGET', unpack(KEYS, s, math.min(s + 4999, n)))
  for i = 1, #vals do out[s + i - 1] = vals[i] or '\\1' end
end
return table.concat(out, '\\n')
"""
_SET_SCRIPT = b"""
local ttl = ARGV[#ARGV]
for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i], 'EX', ttl) end
return #KEYS
"""
# Any Redis failure (unreachable, timeout, or an error reply such as OOM under maxmemory) means
# "fall back", never "fail the window".
REDIS_ERRORS = (redis.RedisError, OSError)


class CacheUnavailable(RuntimeError):
    """The Redis backend could not be reached; the caller falls back to memory."""


def _resp_args(values: pl.Series) -> bytes:
    """RESP bulk strings (``$len\\r\\nvalue\\r\\n``) for every value, built in one vectorized pass."""
    frame = pl.DataFrame({"v": values.cast(pl.String)})
    return (
        frame.select(
            pl.concat_str(
                [pl.lit("$"), pl.col("v").str.len_bytes().cast(pl.String), pl.lit("\r\n"), pl.col("v"), pl.lit("\r\n")]
            ).str.join("")
        )
        .item()
        .encode()
    )


def _resp_command(head: list[bytes], tail: list[pl.Series]) -> bytes:
    count = len(head) + sum(len(s) for s in tail)
    out = [f"*{count}\r\n".encode()]
    out += [b"$%d\r\n%s\r\n" % (len(part), part) for part in head]
    out += [_resp_args(s) for s in tail]
    return b"".join(out)


class RedisBackend:
    """Bulk get/set of string values with a TTL on one Redis database."""

    def __init__(self, url: str, socket_timeout: float = 5.0) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=1.0)

    def _run(self, commands: Iterator[bytes]) -> list[bytes | int]:
        """Send packed commands, a few in flight at a time, and return their replies in order."""
        replies: list[bytes | int] = []
        try:
            conn = self.client.connection_pool.get_connection()
        except REDIS_ERRORS as exc:
            raise CacheUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc
        try:
            batch: list[bytes] = []
            for command in commands:
                batch.append(command)
                if len(batch) == CALLS_IN_FLIGHT:
                    replies += self._exchange(conn, batch)
                    batch = []
            if batch:
                replies += self._exchange(conn, batch)
        except REDIS_ERRORS as exc:
            conn.disconnect()
            raise CacheUnavailable(f"Redis at {self.url} is unreachable: {exc}") from exc
        finally:
            self.client.connection_pool.release(conn)
        return replies

    @staticmethod
    def _exchange(conn: redis.connection.Connection, batch: list[bytes]) -> list[bytes | int]:
        conn.send_packed_command(batch)
        return [conn.read_response() for _ in batch]

    def get_many(self, keys: pl.Series) -> pl.Series:
        """Values for ``keys`` (String), null where the key does not exist."""
        if keys.is_empty():
            return pl.Series(keys.name, [], dtype=pl.String)
        chunks = (keys.slice(i, CHUNK) for i in range(0, len(keys), CHUNK))
        commands = (_resp_command([b"EVAL", _GET_SCRIPT, b"%d" % len(c)], [c]) for c in chunks)
        replies = self._run(commands)
        values = pl.Series(replies, dtype=pl.Binary).cast(pl.String).str.split("\n").explode()
        return values.replace(_MISSING, None).rename(keys.name)

    def set_many(self, keys: pl.Series, values: pl.Series, ttl_seconds: int) -> None:
        ttl = pl.Series([str(int(ttl_seconds))])
        commands = (
            _resp_command(
                [b"EVAL", _SET_SCRIPT, b"%d" % min(CHUNK, len(keys) - i)],
                [keys.slice(i, CHUNK), values.slice(i, CHUNK), ttl],
            )
            for i in range(0, len(keys), CHUNK)
        )
        self._run(commands)


class MemoryBackend:
    """The in-process stand-in: a dict of key -> (value, expiry on the monotonic clock)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[str, float]] = {}

    def get_many(self, keys: pl.Series) -> pl.Series:
        now = self.clock()
        get = self.entries.get
        out = []
        for key in keys.to_list():
            entry = get(key)
            out.append(entry[0] if entry is not None and entry[1] > now else None)
        return pl.Series(keys.name, out, dtype=pl.String)

    def set_many(self, keys: pl.Series, values: pl.Series, ttl_seconds: int) -> None:
        expires = self.clock() + ttl_seconds
        self.entries.update((k, (v, expires)) for k, v in zip(keys.to_list(), values.to_list(), strict=True))
        if len(self.entries) > 4 * len(keys) + 100_000:
            self._evict_expired()

    def _evict_expired(self) -> None:
        now = self.clock()
        self.entries = {k: e for k, e in self.entries.items() if e[1] > now}


@dataclass
class CacheStats:
    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0  # times Redis failed and memory took over

    def count(self, namespace: str, hits: int, misses: int) -> None:
        self.hits[namespace] = self.hits.get(namespace, 0) + hits
        self.misses[namespace] = self.misses.get(namespace, 0) + misses
        CACHE_HITS.labels(cache=namespace).inc(hits)
        CACHE_MISSES.labels(cache=namespace).inc(misses)

    def hit_ratio(self) -> float:
        hits, total = sum(self.hits.values()), sum(self.hits.values()) + sum(self.misses.values())
        return hits / total if total else 0.0


class EnrichmentCache:
    """Namespaced TTL cache over addresses: ``get("dns", ips)`` reads the keys ``dns:<ip>``.

    ``ttls`` maps namespace -> seconds (the scaling model: dns 3600, geo 86400, asset 300). ``redis_url`` None
    means memory only. Nothing connects until the first get/put.
    """

    def __init__(self, ttls: dict[str, int], redis_url: str | None = None, retry_seconds: float = 30.0) -> None:
        self.ttls = dict(ttls)
        self.redis = RedisBackend(redis_url) if redis_url else None
        self.memory = MemoryBackend()
        self.retry_seconds = retry_seconds
        self._redis_down_until = 0.0
        self.stats = CacheStats()

    @property
    def backend(self) -> str:
        return "redis" if self._use_redis() else "memory"

    def _use_redis(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._redis_down_until

    def _fallback(self, exc: Exception) -> None:
        self._redis_down_until = time.monotonic() + self.retry_seconds
        self.stats.fallbacks += 1
        log.warning("%s; using the in-process cache for %.0f s, then retrying Redis", exc, self.retry_seconds)

    @staticmethod
    def _keys(namespace: str, ips: pl.Series) -> pl.Series:
        return pl.select(pl.lit(f"{namespace}:") + pl.lit(ips.cast(pl.String))).to_series().rename("key")

    def get(self, namespace: str, ips: pl.Series, count: bool = True) -> pl.Series:
        """Cached values for ``ips`` (text addresses), null where missing or expired."""
        keys = self._keys(namespace, ips)
        values = None
        if self._use_redis():
            try:
                values = self.redis.get_many(keys)
            except CacheUnavailable as exc:
                self._fallback(exc)
        if values is None:
            values = self.memory.get_many(keys)
        if count:
            hits = len(values) - values.null_count()
            self.stats.count(namespace, hits, len(values) - hits)
        return values.rename(namespace)

    def put(self, namespace: str, ips: pl.Series, values: pl.Series, ttl_seconds: int | None = None) -> None:
        """Store ``values`` (strings without newlines) for ``ips`` with the namespace's TTL."""
        if ips.is_empty():
            return
        keys = self._keys(namespace, ips)
        ttl = int(ttl_seconds or self.ttls[namespace])
        if self._use_redis():
            try:
                self.redis.set_many(keys, values.cast(pl.String), ttl)
                return
            except CacheUnavailable as exc:
                self._fallback(exc)
        self.memory.set_many(keys, values.cast(pl.String), ttl)
