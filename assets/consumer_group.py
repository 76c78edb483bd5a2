"""The pipeline's position in ``flows.raw`` as a Kafka consumer group.

The pipeline reads each window by timestamp (``KafkaLanding.read_window``), not by subscription.
After a window is written, the offsets where its read stopped are committed for
:data:`CONSUMER_GROUP`, only forward (a backfill of an older window never moves the group back), so
the group's lag is what any Kafka tool shows (``kafka-consumer-groups --describe --group
flowlens-pipeline``) and what ``flowlens metrics`` turns into seconds per partition.
"""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

CONSUMER_GROUP = "flowlens-pipeline"
TIMEOUT_SECONDS = 10


def group_consumer(bootstrap: str, **extra: object) -> Consumer:
    """A consumer of the pipeline's group that never joins it (assign only) and never auto-commits."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": CONSUMER_GROUP, "enable.auto.commit": False,
                     **extra})  # fmt: skip


def commit_forward(bootstrap: str, topic: str, position: dict[str, list[int]]) -> dict[int, int]:
    """Commit each partition's stop offset of a window read (``{partition: [first, stop]}``) when it is
    past the group's committed offset; returns what was committed."""
    wanted = {int(partition): int(span[1]) for partition, span in position.items()}
    if not wanted:
        return {}
    consumer = group_consumer(bootstrap)
    try:
        current = consumer.committed([TopicPartition(topic, p) for p in wanted], timeout=TIMEOUT_SECONDS)
        committed = {tp.partition: tp.offset for tp in current}
        forward = [TopicPartition(topic, p, stop) for p, stop in sorted(wanted.items()) if stop > committed.get(p, -1)]
        if forward:
            consumer.commit(offsets=forward, asynchronous=False)
        return {tp.partition: tp.offset for tp in forward}
    finally:
        consumer.close()
