"""The Kafka landing's own account of what it landed, per window: the witness the landing check uses.

A :class:`~ingest.land.kafka.KafkaLanding` counts, from the broker's delivery reports (so only
acknowledged messages count), the flows, bytes and packets it landed in each 5-minute window and,
per partition of the raw topic, the offsets of those messages. It publishes these tallies to the
topic ``<raw topic>.landed`` (compacted, time-bounded like the raw topic) with every heartbeat and
on ``flush``/``close``:

* key ``<window start, epoch seconds>/<landing id>``: the landing id is new for every landing
  object (a restarted daemon never overwrites the tallies of its previous run);
* value JSON :meth:`WindowTally.as_json` (cumulative for that landing and window, so the latest
  message per key is the whole truth and compaction may drop the older ones);
* timestamp: the window start, so :func:`read_tally` starts at ``offsets_for_times(window)``
  instead of scanning the topic.

The check ``landing_matches_load`` (``flowlens_dagster.checks.reconcile``) compares the sum over
landings with what ``enriched_flows`` recorded it read (``flowlens.window_loads``), and the
offsets with the raw topic's log start offsets (retention or DeleteRecords removed messages of the
window), without reading a single flow back.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

DAY_MS = 24 * 3600 * 1000
# Compacted (the latest tally per key) and deleted with the raw topic's retention (7 days, see
# flowlens_dagster.stack.settings.kafka_topics): a tally outlives no flow it describes.
TOPIC_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(7 * DAY_MS), "segment.ms": str(3600 * 1000)}


def ledger_topic(raw_topic: str) -> str:
    """The tally topic of ``raw_topic``."""
    return f"{raw_topic}.landed"


@dataclass
class WindowTally:
    """Flows, bytes, packets and messages landed in one window, with per-partition offset ranges."""

    rows: int = 0
    bytes: int = 0
    packets: int = 0
    messages: int = 0
    partitions: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last offset, messages]

    def add(self, partition: int, offset: int, rows: int, nbytes: int, packets: int) -> None:
        """Count one acknowledged message at ``offset`` of ``partition``."""
        self.rows, self.bytes, self.packets, self.messages = (
            self.rows + rows, self.bytes + nbytes, self.packets + packets, self.messages + 1,
        )  # fmt: skip
        span = self.partitions.get(partition)
        if span is None:
            self.partitions[partition] = [offset, offset, 1]
        else:
            span[0], span[1], span[2] = min(span[0], offset), max(span[1], offset), span[2] + 1

    def merge(self, other: WindowTally) -> None:
        """Add another landing's tally of the same window."""
        self.rows += other.rows
        self.bytes += other.bytes
        self.packets += other.packets
        self.messages += other.messages
        for partition, (first, last, count) in other.partitions.items():
            span = self.partitions.setdefault(partition, [first, last, 0])
            span[0], span[1], span[2] = min(span[0], first), max(span[1], last), span[2] + count

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "bytes": self.bytes,
            "packets": self.packets,
            "messages": self.messages,
            "partitions": {str(p): list(span) for p, span in sorted(self.partitions.items())},
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> WindowTally:
        parts = {int(p): [int(x) for x in span] for p, span in value.get("partitions", {}).items()}
        return cls(int(value["rows"]), int(value["bytes"]), int(value["packets"]), int(value["messages"]), parts)


class Ledger:
    """The tallies of one landing object; thread-safe (delivery reports and heartbeats may run apart)."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:12]
        self._tallies: dict[int, WindowTally] = {}
        self._dirty: set[int] = set()
        self._lock = threading.Lock()

    def record(self, window: int, partition: int, offset: int, rows: int, nbytes: int, packets: int) -> None:
        """One message of ``window`` (epoch seconds) acknowledged at ``offset`` of ``partition``."""
        with self._lock:
            self._tallies.setdefault(window, WindowTally()).add(partition, offset, rows, nbytes, packets)
            self._dirty.add(window)

    def take_changed(self) -> dict[int, bytes]:
        """The JSON tallies of the windows changed since the last take (the caller publishes them)."""
        with self._lock:
            changed, self._dirty = self._dirty, set()
            return {w: json.dumps({"landing": self.id, "window": w, **self._tallies[w].as_json()}).encode()
                    for w in changed}  # fmt: skip

    def unpublished(self, windows: list[int]) -> None:
        """Mark windows whose publication failed as changed again (the next publish retries them)."""
        with self._lock:
            self._dirty.update(windows)

    def pending(self) -> bool:
        with self._lock:
            return bool(self._dirty)

    def key(self, window: int) -> bytes:
        return f"{window}/{self.id}".encode()


@dataclass(frozen=True)
class LedgerReading:
    """The landings' tally of one window (None: no landing recorded any flow of it) and, for every
    partition the tally mentions, the raw topic's log start offset now."""

    tally: WindowTally | None
    log_start: dict[int, int]

    def deleted(self) -> dict[int, tuple[int, int]]:
        """Partitions whose log now starts after the window's first message: {partition: (first, log start)}."""
        if self.tally is None:
            return {}
        return {
            p: (span[0], self.log_start[p])
            for p, span in self.tally.partitions.items()
            if self.log_start.get(p, 0) > span[0]
        }


def read_tally(bootstrap: str, raw_topic: str, window: datetime) -> LedgerReading:
    """Sum the latest tally of every landing for ``window``, and the raw topic's log start offsets."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"flowlens-ledger-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 2,
    })  # fmt: skip
    try:
        latest = _latest_tallies(consumer, ledger_topic(raw_topic), window)
        if not latest:
            return LedgerReading(None, {})
        total = WindowTally()
        for tally in latest.values():
            total.merge(tally)
        return LedgerReading(total, log_start_offsets(bootstrap, raw_topic, list(total.partitions)))
    finally:
        consumer.close()


def log_start_offsets(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """The first offset still held by each partition, in one ListOffsets request (a consumer's
    ``get_watermark_offsets`` asks partition by partition, ~0.5 s each on a loaded host)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    wanted = {TopicPartition(topic, p): OffsetSpec.earliest() for p in partitions}
    futures = admin.list_offsets(wanted, request_timeout=30)
    return {tp.partition: future.result().offset for tp, future in futures.items()}


def _latest_tallies(consumer: Consumer, topic: str, window: datetime) -> dict[bytes, WindowTally]:
    """The latest value of every key of ``window`` in the tally topic (later offsets win, as compaction keeps)."""
    seconds = int(window.timestamp())
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
            return {}  # no landing ever published a tally here
        raise
    first = consumer.offsets_for_times([TopicPartition(topic, 0, seconds * 1000)], timeout=10)[0].offset
    if first < 0 or first >= high:
        return {}
    prefix = f"{seconds}/".encode()
    latest: dict[bytes, WindowTally] = {}
    consumer.assign([TopicPartition(topic, 0, max(first, low))])
    offset = max(first, low)
    while offset < high:
        msg = consumer.poll(10)
        if msg is None:
            raise RuntimeError(f"Kafka {topic}: no message at offset {offset} (high {high}) within 10 s")
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            raise KafkaException(msg.error())
        offset = msg.offset() + 1
        key = msg.key() or b""
        if key.startswith(prefix) and msg.value() is not None:
            latest[key] = WindowTally.from_json(json.loads(msg.value()))
    return latest
