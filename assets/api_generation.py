"""The query API's cache generation, bumped by the pipeline after every processed window.

The API stores each cache entry with the generation it was built in and ignores entries of older
generations, so no answer is older than the last processed window (plus the entry's TTL). A light
module (no Dagster) because every API worker process imports it.
"""

from __future__ import annotations

API_GENERATION_KEY = "api:generation"  # in Redis database api.cache_db


def bump_api_generation(redis_url: str, cache_db: int) -> None:
    """INCR the generation in database ``cache_db`` of the Redis at ``redis_url`` (whatever its database)."""
    import redis

    url = f"{redis_url.rsplit('/', 1)[0]}/{cache_db}"
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.incr(API_GENERATION_KEY)
