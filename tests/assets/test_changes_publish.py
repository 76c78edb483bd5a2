"""Detected changes reach Kafka ``changes.detected`` (keyed for compaction) and Redis ``changes:topology``."""

import json
from datetime import UTC, datetime

import pytest
import redis as redis_lib
from confluent_kafka import Consumer

from assets.changes import REDIS_CHANNEL, publish
from assets.resources import KafkaResource, RedisResource

pytestmark = pytest.mark.integration
WINDOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CHANGES = [
    {"kind": "new_asset", "subject": "10.0.0.5", "addr": "10.0.0.5"},
    {"kind": "dependency_gone", "subject": "10.0.0.5 -> 10.0.1.9:443/6", "server_port": 443},
]


def test_changes_are_published_to_kafka_and_redis(kafka_bootstrap, kafka_topic, clean_redis):
    topic = kafka_topic("changes.detected.test", partitions=3)
    kafka = KafkaResource(bootstrap_servers=kafka_bootstrap, enabled=True, changes_topic=topic)
    redis = RedisResource(url=clean_redis, enabled=True)
    subscriber = redis_lib.Redis.from_url(clean_redis).pubsub()
    subscriber.subscribe(REDIS_CHANNEL)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"

    assert publish(CHANGES, WINDOW, kafka, redis) == {"kafka": 2, "redis": 2}

    published = [subscriber.get_message(timeout=5) for _ in CHANGES]
    assert [json.loads(m["data"])["subject"] for m in published] == [c["subject"] for c in CHANGES]
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "t", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = {}
    try:
        for _ in range(60):
            msg = consumer.poll(1)
            if msg is not None and msg.error() is None:
                got[msg.key().decode()] = json.loads(msg.value())
            if len(got) == len(CHANGES):
                break
    finally:
        consumer.close()
    assert set(got) == {"new_asset|10.0.0.5", "dependency_gone|10.0.0.5 -> 10.0.1.9:443/6"}
    assert got["new_asset|10.0.0.5"]["window_start"] == WINDOW.isoformat()


def test_nothing_is_published_when_the_mode_has_no_kafka_or_redis():
    # the minimal mode: no producer, no client is even created (the URLs point nowhere)
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:1", enabled=False)
    redis = RedisResource(url="redis://127.0.0.1:1/0", enabled=False)
    assert publish(CHANGES, WINDOW, kafka, redis) == {"kafka": 0, "redis": 0}
