"""The enrichment cache on real Redis (the scaling model §5.2 keys and TTLs), its memory fallback and its counters."""

from __future__ import annotations

import time

import polars as pl
import pytest
import redis

from assets.enrich.cache import EnrichmentCache, MemoryBackend
from assets.metrics import REGISTRY

TTLS = {"dns": 3600, "geo": 86_400, "asset": 300}


def _metric(name: str, cache: str) -> float:
    return REGISTRY.get_sample_value(name, {"cache": cache}) or 0.0


def test_memory_backend_expires_entries() -> None:
    now = [1000.0]
    memory = MemoryBackend(clock=lambda: now[0])
    memory.set_many(pl.Series(["dns:10.0.0.1"]), pl.Series(["a.example"]), ttl_seconds=60)
    assert memory.get_many(pl.Series(["dns:10.0.0.1"])).to_list() == ["a.example"]
    now[0] += 61
    assert memory.get_many(pl.Series(["dns:10.0.0.1"])).to_list() == [None]


def test_in_process_cache_without_redis() -> None:
    cache = EnrichmentCache(TTLS, redis_url=None)
    cache.put("dns", pl.Series(["10.0.0.1", "10.0.0.2"]), pl.Series(["a.example", ""]))
    assert cache.get("dns", pl.Series(["10.0.0.1", "10.0.0.2", "10.0.0.3"])).to_list() == ["a.example", "", None]
    assert cache.backend == "memory"
    assert (cache.stats.hits["dns"], cache.stats.misses["dns"]) == (2, 1)


@pytest.mark.integration
def test_redis_keys_ttls_hits_and_misses(clean_redis: str) -> None:
    cache = EnrichmentCache(TTLS, redis_url=clean_redis)
    hits_before, misses_before = (
        _metric("flowlens_redis_cache_hits_total", "geo"),
        _metric("flowlens_redis_cache_misses_total", "geo"),
    )
    cache.put("geo", pl.Series(["8.8.8.8"]), pl.Series(['{"country":"US","city":"Mountain View"}']))
    cache.put("dns", pl.Series(["8.8.8.8", "9.9.9.9"]), pl.Series(["dns.google", ""]))
    client = redis.Redis.from_url(clean_redis)
    assert client.get("geo:8.8.8.8") == b'{"country":"US","city":"Mountain View"}'
    assert client.get("dns:8.8.8.8") == b"dns.google"
    assert 86_000 < client.ttl("geo:8.8.8.8") <= 86_400
    assert 3500 < client.ttl("dns:8.8.8.8") <= 3600
    values = cache.get("geo", pl.Series(["8.8.8.8", "1.1.1.1"]))
    assert values.to_list() == ['{"country":"US","city":"Mountain View"}', None]
    assert cache.get("dns", pl.Series(["9.9.9.9"])).to_list() == [""]  # a cached negative answer
    assert _metric("flowlens_redis_cache_hits_total", "geo") - hits_before == 1
    assert _metric("flowlens_redis_cache_misses_total", "geo") - misses_before == 1
    assert cache.backend == "redis" and cache.stats.fallbacks == 0


@pytest.mark.integration
def test_redis_ttl_expiry(clean_redis: str) -> None:
    cache = EnrichmentCache(TTLS, redis_url=clean_redis)
    cache.put("dns", pl.Series(["10.0.0.9"]), pl.Series(["short.example"]), ttl_seconds=1)
    assert cache.get("dns", pl.Series(["10.0.0.9"])).to_list() == ["short.example"]
    time.sleep(1.6)  # let Redis expire the key (not a timing assertion: we only read after it)
    assert cache.get("dns", pl.Series(["10.0.0.9"])).to_list() == [None]


@pytest.mark.integration
def test_bulk_round_trip_many_chunks(clean_redis: str) -> None:
    ips = pl.Series([f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(45_000)])
    names = pl.Series([f"h{i}.example" if i % 3 else "" for i in range(45_000)])
    cache = EnrichmentCache(TTLS, redis_url=clean_redis)
    cache.put("dns", ips, names)
    assert cache.get("dns", ips).to_list() == names.to_list()
    assert redis.Redis.from_url(clean_redis).dbsize() == 45_000


@pytest.mark.integration
def test_unreachable_redis_falls_back_to_memory(redis_proxy) -> None:
    proxy, url = redis_proxy
    cache = EnrichmentCache(TTLS, redis_url=url, retry_seconds=0.5)
    cache.put("dns", pl.Series(["10.0.0.1"]), pl.Series(["before.example"]))
    assert cache.get("dns", pl.Series(["10.0.0.1"])).to_list() == ["before.example"]
    proxy.close()  # Redis goes away mid-run
    assert cache.get("dns", pl.Series(["10.0.0.1"])).to_list() == [None]  # a miss, not an error
    cache.put("dns", pl.Series(["10.0.0.2"]), pl.Series(["during.example"]))
    assert cache.get("dns", pl.Series(["10.0.0.2"])).to_list() == ["during.example"]
    assert cache.backend == "memory" and cache.stats.fallbacks == 1
    proxy.open()
    time.sleep(0.6)  # past retry_seconds: the next call tries Redis again
    assert cache.get("dns", pl.Series(["10.0.0.1"])).to_list() == ["before.example"]
    assert cache.backend == "redis"


@pytest.mark.integration
def test_killed_connection_is_survived(clean_redis: str) -> None:
    cache = EnrichmentCache(TTLS, redis_url=clean_redis)
    cache.put("dns", pl.Series(["10.0.0.1"]), pl.Series(["a.example"]))
    client = redis.Redis.from_url(clean_redis)
    client.client_kill_filter(_type="normal", skipme=True)
    # the pooled connection is dead: the call either reconnects or falls back, it never raises
    values = cache.get("dns", pl.Series(["10.0.0.1"]))
    assert values.to_list() == ["a.example"] or (values.to_list() == [None] and cache.stats.fallbacks == 1)
