"""Auto mode: the pipeline publishes on Redis (``changes:topology``, the API cache generation) only while
the query API uses Redis, by the decision the API records in ``flowlens.redis_use``."""

import json
from datetime import UTC, datetime

import psycopg
import pytest
import redis as redis_lib

from assets.api_generation import API_GENERATION_KEY
from assets.changes import REDIS_CHANNEL, process_window
from assets.resources import KafkaResource, PostgresResource, RedisResource
from ingest.scaling.redis_use import RECORD_SQL, record_params

pytestmark = pytest.mark.integration
WINDOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CACHE_DB = 2

NEW_ASSET = """
INSERT INTO flowlens.assets (addr, first_seen, last_seen, first_window)
VALUES ('10.0.7.7', %(w)s, %(w)s, %(w)s)
"""


def _api_decision(dsn: str, state: str) -> None:
    """What the API recorded: 'redis', 'memory', 'gone' (said Redis, then stopped checking), or 'none'."""
    if state == "none":
        return
    with psycopg.connect(dsn) as conn:
        conn.execute(RECORD_SQL, record_params("api-host:1", state != "memory", "test"))
        if state == "gone":
            conn.execute("UPDATE flowlens.redis_use SET seen_at = seen_at - interval '1 hour'")


def _generation(redis_url: str) -> int:
    with redis_lib.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{CACHE_DB}") as client:
        return int(client.get(API_GENERATION_KEY) or 0)


@pytest.mark.parametrize(("api", "published"), [("redis", True), ("memory", False), ("gone", False), ("none", False)])
def test_auto_mode_publishes_on_redis_only_while_the_api_uses_it(
    clean_pg, clean_redis, flowlens_config, api, published
):
    pg = flowlens_config.postgres
    postgres = PostgresResource(host=pg.host, port=pg.port, database=pg.database, user=pg.user, password=pg.password)
    with psycopg.connect(clean_pg) as conn:
        conn.execute(NEW_ASSET, {"w": WINDOW})
    _api_decision(clean_pg, api)
    kafka = KafkaResource(enabled=False)
    redis = RedisResource(url=clean_redis, enabled=True, follow_api=True, api_cache_db=CACHE_DB)
    subscriber = redis_lib.Redis.from_url(clean_redis).pubsub()
    subscriber.subscribe(REDIS_CHANNEL)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"
    generation = _generation(clean_redis)

    result = process_window(WINDOW, postgres, kafka, redis, gone_after=2)

    assert result.rows_written == 1 and result.source_position["redis"] is published
    message = subscriber.get_message(timeout=3)
    subscriber.close()
    if published:
        assert json.loads(message["data"])["subject"] == "10.0.7.7"
        assert _generation(clean_redis) == generation + 1
    else:
        assert message is None
        assert _generation(clean_redis) == generation


def test_the_static_modes_do_not_read_the_api_decision():
    # standard/full publish whenever Redis is part of the mode; PostgreSQL is not even asked (it points nowhere)
    nowhere = PostgresResource(host="127.0.0.1", port=1, database="x", user="x", password="x")
    assert RedisResource(url="redis://127.0.0.1:1/0", enabled=True).publishing(nowhere)
    assert not RedisResource(url="redis://127.0.0.1:1/0", enabled=False, follow_api=True).publishing(nowhere)
