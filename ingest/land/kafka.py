"""Kafka landing (standard/full modes): Arrow IPC record batches on ``flows.raw``.

Message layout (the contract readers rely on):

* value: an Arrow IPC *stream* holding one record batch of :data:`ingest.schema.FLOW_SCHEMA`;
* partition: ``partition_of(src_addr, dst_addr) % partitions`` (the scaling model §4.2: a hash of source plus
  destination address, so one address pair always lands in one partition); each batch is split by
  partition and into messages of at most ``ingest.kafka_message_max_flows`` flows (the broker's
  default limit is 1 MB per message); the key is the partition number;
* timestamp: the oldest receive_time in the message (ms); all its flows are in one 5-minute window;
* headers: ``flowlens-kind: flows``, ``flowlens-window`` (window start, epoch seconds),
  ``flowlens-max-us`` (newest receive_time, µs), ``flowlens-rows``.

Watermarks: :meth:`KafkaLanding.heartbeat` produces ``flowlens-kind: watermark`` messages (key =
instance, value JSON ``{instance, landed_through, flows_landed}``) to *every* partition of the raw
topic, after everything the instance landed before is acknowledged, so within a partition every
flow of an instance precedes its heartbeat. Their Kafka timestamp is ``landed_through``, not the
wall clock: every message of the raw topic is stamped on the clock that assigns windows (receive
or export time), which is what lets :meth:`KafkaLanding.read_window` bound its reads by timestamp
(a wall-clock heartbeat among flows exported two hours ago would end a past window's read at the
first heartbeat). The same heartbeat also goes to the one-partition topic ``<raw topic>.watermarks``
(compacted, stamped with the wall clock: the sensor's liveness), which :meth:`watermarks` reads
without scanning flows. With every heartbeat (and on :meth:`flush`) the landing also publishes its
per-window tallies of what the broker acknowledged to ``<raw topic>.landed``
(:mod:`ingest.land.ledger`), the witness the landing reconciliation checks against.

Producer tuning (the scaling model §4.4, adapted): ``linger.ms=5``; ``batch.size`` 1 MB since one message is
already ~0.5 MB. Compression is LZ4 *inside the Arrow IPC message* (Arrow's per-buffer body
compression, ``compression`` argument, "lz4" by default; any Arrow reader decompresses it
transparently) and Kafka's own ``compression.type`` is ``none``. Measured here on flows.raw
messages (4096 flows), librdkafka spent 0.24 µs per flow compressing with lz4 (0.39 with zstd,
6.6 with the scaling model's gzip), and the broker must decompress a Kafka-compressed batch again to
validate it; compressing the Arrow buffers costs about 40 ns per flow, and the broker only
appends. The price: messages are 2.4x smaller than raw instead of ~4x (buffers are compressed
one by one), which a local disk absorbs easily at these rates. ``acks=all`` with
``enable.idempotence`` so retries never duplicate a batch (one broker: same cost as acks=1).
Delivery failures after librdkafka's own retries are counted and the failed parts are
handed back to the daemon, which retries them with backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ingest.addresses import addresses
from ingest.land.base import WHOLE_WINDOW, OnDone, Watermark, WindowChunks, WindowRead, read_ahead, rechunk
from ingest.land.ipc import from_ipc, ipc_options, to_ipc
from ingest.land.ledger import TOPIC_CONFIG as LEDGER_CONFIG
from ingest.land.ledger import Ledger, LedgerReading, ledger_topic, read_tally
from ingest.schema import receive_times_us
from ingest.window import WINDOW, window_start

log = logging.getLogger(__name__)

KIND = "flowlens-kind"
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9),
        np.uint64(0xD6E8FEB86659FD93), np.uint64(0xFF51AFD7ED558CCD))  # fmt: skip


def partition_of(batch: pa.RecordBatch | pa.Table, partitions: int) -> np.ndarray:
    """Partition number of every flow: a 64-bit mix of src_addr || dst_addr, modulo ``partitions``.

    The mix multiplies each little-endian 64-bit word of the two addresses by an odd constant,
    xors them and finalizes like MurmurHash3's fmix64, so nearby addresses spread evenly.
    """
    src = np.ascontiguousarray(addresses(_array(batch, "src_addr"))).view("<u8")
    dst = np.ascontiguousarray(addresses(_array(batch, "dst_addr"))).view("<u8")
    h = (src[:, 0] * _MIX[0]) ^ (src[:, 1] * _MIX[1]) ^ (dst[:, 0] * _MIX[2]) ^ (dst[:, 1] * _MIX[3])
    h ^= h >> np.uint64(33)
    h *= _MIX[4]
    h ^= h >> np.uint64(33)
    return (h % np.uint64(partitions)).astype(np.int32)


def _array(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    col = batch.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


class _Pending:
    """The messages of one write_async call; calls on_done once all are settled."""

    def __init__(self, count: int, on_done: OnDone):
        self.left = count
        self.failed: list[pa.RecordBatch] = []
        self.error: str | None = None
        self.on_done = on_done


class KafkaLanding:
    """The :class:`ingest.land.base.Landing` of the Kafka modes."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        stats=None,
        message_max_flows: int = 4096,
        read_slack_seconds: float = 60.0,
        producer_overrides: dict | None = None,
        create_watermark_topic: bool = True,
        compression: str = "lz4",
    ):
        self.bootstrap = bootstrap
        self.topic = topic
        self.watermark_topic = f"{topic}.watermarks"
        self.ledger_topic = ledger_topic(topic)
        self.ledger = Ledger()  # what this landing had acknowledged, per window (ingest.land.ledger)
        self.stats = stats
        self.message_max_flows = message_max_flows
        self.read_slack = timedelta(seconds=read_slack_seconds)
        self._producer: Producer | None = None
        self._producer_overrides = producer_overrides or {}
        self._partitions: int | None = None
        self._lock = threading.Lock()
        self._create_watermark_topic = create_watermark_topic
        self._last_error: dict[int, float] = {}
        self._ipc_options = ipc_options(compression)

    # --- producer -----------------------------------------------------------------------------
    @property
    def producer(self) -> Producer:
        if self._producer is None:
            conf = {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "compression.type": "none",  # the Arrow IPC message body is compressed
                "acks": "all",
                "enable.idempotence": True,
                "message.max.bytes": 4_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                "message.timeout.ms": 300_000,
                "retry.backoff.ms": 100,
                "retry.backoff.max.ms": 5_000,
                "error_cb": self._on_error,
                "log_level": 2,  # errors come through error_cb (rate-limited), not librdkafka's stderr
            }
            conf.update(self._producer_overrides)
            self._producer = Producer(conf)
        return self._producer

    def _on_error(self, err: KafkaError) -> None:
        if self.stats is not None and err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            # Messages wait in librdkafka (and count in the queue depth) until the broker is back.
            self.stats.landing_up[self.name] = 0
            self.stats.landing_failures[self.name] += 1
        # librdkafka repeats connection errors many times a second while a broker is away.
        now = time.monotonic()
        if now - self._last_error.get(err.code(), -1e9) >= 10:
            self._last_error[err.code()] = now
            log.warning("kafka %s: %s (repeats are silenced for 10 s)", self.bootstrap, err.str())

    def partitions(self) -> int:
        if self._partitions is None:
            meta = self.producer.list_topics(self.topic, timeout=10)
            info = meta.topics.get(self.topic)
            if info is None or info.error is not None or not info.partitions:
                raise RuntimeError(
                    f"Kafka topic {self.topic!r} is missing on {self.bootstrap} "
                    f"({info.error if info else 'no metadata'}); create it (flowlens stack up creates flows.raw)"
                )
            self._partitions = len(info.partitions)
            if self._create_watermark_topic:
                self._ensure_watermark_topic()
        return self._partitions

    def _ensure_watermark_topic(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 2})
        config = {"cleanup.policy": "compact", "segment.ms": "3600000"}
        # Replication -1: the broker's default.replication.factor (3 on the stack's cluster; the stack
        # itself creates this topic with kafka.replication_factor before any daemon runs).
        futures = admin.create_topics([
            NewTopic(self.watermark_topic, 1, -1, config=config),
            NewTopic(self.ledger_topic, 1, -1, config=LEDGER_CONFIG),
        ])  # fmt: skip
        for future in futures.values():
            try:
                future.result(timeout=15)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def messages(self, batch: pa.RecordBatch) -> list[tuple[int, pa.RecordBatch]]:
        """Split a batch into (partition, sub-batch) messages of at most message_max_flows flows."""
        parts = partition_of(batch, self.partitions())
        if self.partitions() <= 256:  # stable sort of 8-bit keys is a radix sort: ~8x faster
            parts = parts.astype(np.uint8)
        order = np.argsort(parts, kind="stable")
        sorted_parts = parts[order]
        bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
        out = []
        taken = batch.take(pa.array(order))
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
            for start in range(int(lo), int(hi), self.message_max_flows):
                length = min(self.message_max_flows, int(hi) - start)
                out.append((int(sorted_parts[lo]), taken.slice(start, length)))
        return out

    def write_async(self, batch: pa.RecordBatch, on_done: OnDone) -> None:
        """Produce a batch; ``on_done(failed_parts, error)`` runs (from :meth:`poll`) once it is settled."""
        msgs = self.messages(batch)
        pending = _Pending(len(msgs), on_done)
        if not msgs:
            on_done([], None)
            return
        for partition, sub in msgs:
            times = receive_times_us(sub)
            oldest, newest = int(times.min()), int(times.max())
            window = int(window_start(datetime.fromtimestamp(oldest / 1e6, UTC)).timestamp())
            headers = [
                (KIND, b"flows"),
                ("flowlens-window", str(window).encode()),
                ("flowlens-max-us", str(newest).encode()),
                ("flowlens-rows", str(sub.num_rows).encode()),
            ]
            tally = (window, sub.num_rows, _sum(sub, "bytes"), _sum(sub, "packets"))
            self._produce(
                value=to_ipc(sub, self._ipc_options),
                key=str(partition).encode(),
                partition=partition,
                timestamp=oldest // 1000,
                headers=headers,
                on_delivery=lambda err, msg, sub=sub, tally=tally: self._delivered(pending, sub, err, msg, tally),
            )

    def _produce(self, topic: str | None = None, **kwargs) -> None:
        while True:
            try:
                self.producer.produce(topic or self.topic, **kwargs)
                return
            except BufferError:  # librdkafka's local queue is full: serve callbacks, then retry
                self.producer.poll(0.05)

    def _delivered(self, pending: _Pending, sub: pa.RecordBatch, err: KafkaError | None, msg, tally: tuple) -> None:
        pending.left -= 1
        if err is None:  # acknowledged: counts in the window's tally (tally = window, rows, bytes, packets)
            window, rows, nbytes, packets = tally
            self.ledger.record(window, msg.partition(), msg.offset(), rows, nbytes, packets)
        if err is not None:
            pending.failed.append(sub)
            pending.error = str(err)
            if self.stats is not None:
                self.stats.kafka_errors[self.topic] += 1
        elif self.stats is not None:
            self.stats.kafka_produced[self.topic] += 1
            self.stats.landing_up[self.name] = 1
        if pending.left == 0:
            pending.on_done(pending.failed, pending.error)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks (must be called regularly by the writing thread)."""
        return self.producer.poll(timeout)

    def outstanding(self) -> int:
        return len(self.producer) if self._producer is not None else 0

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every produced message, then publish the window tallies
        of what was acknowledged (:mod:`ingest.land.ledger`); return how many messages are left."""
        if self._producer is None:
            return 0
        left = self.producer.flush(timeout)
        if self.ledger.pending():
            self._produce_tallies(lambda err, msg: None)
            left = self.producer.flush(timeout)
        return left

    def _produce_tallies(self, delivered) -> int:
        """Produce the changed window tallies; a tally not delivered is marked changed again."""
        changed = self.ledger.take_changed()

        def settled(err: KafkaError | None, msg, window: int) -> None:
            if err is not None:
                self.ledger.unpublished([window])
            delivered(err, msg)

        for window, value in changed.items():
            self._produce(
                topic=self.ledger_topic, value=value, key=self.ledger.key(window), timestamp=window * 1000,
                on_delivery=lambda err, msg, window=window: settled(err, msg, window),
            )  # fmt: skip
        return len(changed)

    def landed_tally(self, start: datetime) -> LedgerReading:
        """What every landing recorded it landed in the window starting at ``start`` (no flow is read)."""
        return read_tally(self.bootstrap, self.topic, start)

    def write(self, batch: pa.RecordBatch) -> None:
        """Synchronous write: produce and wait for delivery; raise if any part failed."""
        result: list = []
        self.write_async(batch, lambda failed, error: result.append((failed, error)))
        while not result:
            self.producer.poll(0.1)
        failed, error = result[0]
        if failed:
            raise RuntimeError(f"Kafka delivery to {self.topic} failed for {len(failed)} message(s): {error}")

    def heartbeat(self, instance: str, landed_through: datetime, flows_landed: int, wait: float = 1.0) -> None:
        """Publish the watermark to every partition and to the watermark topic.

        The caller computed ``landed_through`` from flows already acknowledged, and librdkafka
        keeps per-partition order (idempotent producer), so the heartbeat follows them. Waits up
        to ``wait`` seconds for its delivery (never for the data behind it) and raises if it is
        not delivered by then; the next heartbeat supersedes a lost one.
        """
        value = json.dumps(
            {"instance": instance, "landed_through": landed_through.isoformat(), "flows_landed": flows_landed}
        ).encode()
        now_ms = int(time.time() * 1000)
        headers = [(KIND, b"watermark")]
        result = {"left": self.partitions() + 1, "errors": []}

        def delivered(err: KafkaError | None, msg) -> None:
            result["left"] -= 1
            if err is not None:
                result["errors"].append(str(err))
                if self.stats is not None:
                    self.stats.kafka_errors[msg.topic()] += 1

        # On flows.raw every message is stamped on the window clock (flows: their oldest
        # receive_time; heartbeats: landed_through), so read_window's offsets_for_times bounds hold
        # in both timestamp modes. The watermark topic keeps the wall clock: it tells liveness.
        through_ms = _ms(landed_through)
        # The window tallies of what was acknowledged so far go with the heartbeat (same wait).
        result["left"] += self._produce_tallies(delivered)
        for partition in range(self.partitions()):
            self._produce(value=value, key=instance.encode(), partition=partition, timestamp=through_ms,
                          headers=headers, on_delivery=delivered)  # fmt: skip
        self._produce(value=value, key=instance.encode(), timestamp=now_ms, headers=headers,
                      on_delivery=delivered, topic=self.watermark_topic)  # fmt: skip
        deadline = time.monotonic() + wait
        while result["left"] and time.monotonic() < deadline:
            self.producer.poll(0.05)
        if result["left"] or result["errors"]:
            raise RuntimeError(
                f"heartbeat of {instance} not delivered within {wait:.0f}s "
                f"({result['left']} pending, errors: {result['errors'][:1]}); is Kafka at {self.bootstrap} up?"
            )

    # --- reading ------------------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"flowlens-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.max.bytes": 52_428_800,
                "max.partition.fetch.bytes": 8_388_608,
                "fetch.wait.max.ms": 10,  # reads stop at known offsets: never wait for new data
                # A broker of a cluster that is down would be logged by every read; a read that
                # cannot proceed raises with the reason instead.
                "log_level": 2,
            }
        )

    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """Exactly the flows with receive_time in [start, end), in one table (:meth:`read_window_chunks`)."""
        return self.read_window_chunks(start, end, WHOLE_WINDOW).read_all()

    def read_window_chunks(self, start: datetime, end: datetime, chunk_flows: int) -> WindowChunks:
        """Exactly the flows with receive_time in [start, end), in tables of about ``chunk_flows`` rows.

        One consumer pass, partition by partition. Per partition the read starts at
        ``offsets_for_times(start)`` (every message holding a flow of the window has a timestamp
        >= start) and stops at the later of: the first offset with a timestamp >= end + slack, and
        the first heartbeat of every instance whose watermark is past ``end`` (all its flows of
        the window precede it); never past the high watermark. Heartbeats are stamped with their
        ``landed_through`` (see :meth:`heartbeat`), so the timestamp bound is on the window clock
        in both timestamp modes. The slack covers only instances that never reached ``end``
        (stopped or crashed): their flows of the window are read until a message stamped
        ``end + slack`` or later. A chunk is handed on as soon as it holds ``chunk_flows`` flows,
        read ahead by a thread while the caller works on the previous one (:func:`read_ahead`), so
        memory holds two chunks plus the consumer's fetch queue, never the window.
        """
        position: dict[str, list[int]] = {}
        return WindowChunks(
            chunks=read_ahead(rechunk(self._window_tables(start, end, position), chunk_flows)),
            source=f"kafka:{self.topic}",
            position=position,
        )

    def _window_tables(self, start: datetime, end: datetime, position: dict[str, list[int]]) -> Iterator[pa.Table]:
        """The window's flows message by message over every partition; fills ``position`` as it goes."""
        done_instances = {w.instance for w in self.watermarks() if w.landed_through >= end}
        consumer = self._consumer()
        try:
            n = len(consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions)
            starts = consumer.offsets_for_times(
                [TopicPartition(self.topic, p, _ms(start)) for p in range(n)], timeout=10
            )
            stops = consumer.offsets_for_times(
                [TopicPartition(self.topic, p, _ms(end + self.read_slack)) for p in range(n)], timeout=10
            )
            for p in range(n):
                high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                first = starts[p].offset if starts[p].offset >= 0 else high
                ts_stop = stops[p].offset if stops[p].offset >= 0 else high
                stop = [first]
                yield from self._read_partition(consumer, p, (first, ts_stop, high), (start, end), done_instances, stop)
                position[str(p)] = [first, stop[0]]
        finally:
            consumer.close()

    def _messages(self, consumer: Consumer, topic: str, partition: int, first: int, high: int):
        """Messages of one partition from ``first`` until the end (``high`` or end of partition)."""
        consumer.assign([TopicPartition(topic, partition, first)])
        try:
            offset = first
            while offset < high:
                msg = consumer.poll(10)
                if msg is None:
                    raise RuntimeError(
                        f"Kafka {topic}[{partition}]: no message at offset {offset} (high {high}) within 10 s; "
                        f"is the broker at {self.bootstrap} healthy?"
                    )
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        return
                    raise KafkaException(msg.error())
                offset = msg.offset() + 1
                yield msg
        finally:
            consumer.unassign()

    def _read_partition(self, consumer, p, offsets, bounds, instances, stop: list[int]) -> Iterator[pa.Table]:
        """The window's flows in messages [first, stop) of partition p; ``stop[0]`` ends as the stop offset."""
        first, ts_stop, high = offsets
        start, end = bounds
        if first >= high:
            return
        window_key = str(int(start.timestamp())).encode()
        waiting = set(instances)
        start_us, end_us = _us(start), _us(end)
        for msg in self._messages(consumer, self.topic, p, first, high):
            stop[0] = msg.offset() + 1
            headers = dict(msg.headers() or [])
            if headers.get(KIND) == b"watermark":
                info = json.loads(msg.value())
                if datetime.fromisoformat(info["landed_through"]) >= end:
                    waiting.discard(info["instance"])
            elif headers.get("flowlens-window") == window_key:
                table = from_ipc(msg.value())
                times = table.column("receive_time").cast(pa.int64())
                keep = pc.and_(pc.greater_equal(times, start_us), pc.less(times, end_us))
                yield table.filter(keep)
            if stop[0] >= ts_stop and not waiting:
                break

    def watermarks(self) -> list[Watermark]:
        """The latest heartbeat of every instance, from the watermark topic."""
        consumer = self._consumer()
        latest: dict[str, Watermark] = {}
        try:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.watermark_topic, 0), timeout=10)
            except KafkaException:
                return []
            for msg in self._messages(consumer, self.watermark_topic, 0, low, high):
                info = json.loads(msg.value())
                latest[info["instance"]] = Watermark(
                    info["instance"],
                    datetime.fromisoformat(info["landed_through"]),
                    datetime.fromtimestamp(msg.timestamp()[1] / 1000, UTC),
                    int(info.get("flows_landed", 0)),
                )
        finally:
            consumer.close()
        return sorted(latest.values(), key=lambda w: w.instance)

    def newest_receive_time(self) -> datetime | None:
        """Newest receive_time among the last 50 messages of every partition."""
        consumer = self._consumer()
        newest = None
        try:
            n = len(consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions)
            for p in range(n):
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
                for msg in self._messages(consumer, self.topic, p, max(low, high - 50), high):
                    value = dict(msg.headers() or []).get("flowlens-max-us")
                    if value is not None:
                        newest = max(newest or 0, int(value))
        finally:
            consumer.close()
        return datetime.fromtimestamp(newest / 1e6, UTC) if newest else None

    def close(self) -> None:
        if self._producer is not None:
            self.flush(30)
            self._producer = None


def _sum(batch: pa.RecordBatch, column: str) -> int:
    return int(pc.sum(batch.column(column)).as_py() or 0)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


__all__ = ["WINDOW", "KafkaLanding", "from_ipc", "partition_of", "to_ipc"]
