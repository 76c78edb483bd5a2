"""Both landing backends against the real services: write, read a window back exactly, watermarks."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from ingest.land import open_landing
from ingest.land.base import SummarizesWindows, WindowSummary, WritesAsync
from ingest.land.kafka import from_ipc, partition_of
from ingest.window import WINDOW
from ingest.worker import split_windows
from tests.ingest.flows import random_flows

pytestmark = pytest.mark.integration
W0 = datetime(2026, 11, 25, 23, 55, tzinfo=UTC)  # the last window of a day: partitions on both sides
WINDOW_US = int(WINDOW.total_seconds() * 1_000_000)


def us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


def sorted_table(table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in ("receive_time", "src_addr", "dst_addr", "src_port", "bytes")])


@pytest.fixture(params=["postgres", "kafka"])
def landing(request, flowlens_config):
    if request.param == "postgres":
        request.getfixturevalue("clean_pg")
        cfg = flowlens_config.model_copy(update={"mode": "minimal"})
    else:
        topic = request.getfixturevalue("kafka_topic")("flows.raw.land")
        cfg = flowlens_config.model_copy(update={"mode": "standard"})
        cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"raw_topic": topic})})
        cfg.ingest.kafka_message_max_flows = 500
    land = open_landing(cfg)
    yield land
    land.close()
    if request.param == "kafka":
        admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
        for future in admin.delete_topics([f"{cfg.kafka.raw_topic}.watermarks"], operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


def test_read_window_returns_exactly_its_flows(landing):
    # 12 minutes of flows across three windows and a day boundary, written in window-sized pieces.
    flows = random_flows(6_000, us(W0 - timedelta(minutes=4)), span_us=12 * 60 * 1_000_000, seed=11)
    pieces = split_windows(flows)
    assert len(pieces) == 3
    for piece in pieces:
        landing.write(piece)
    every = pa.Table.from_batches([flows])
    for start in (W0 - WINDOW, W0, W0 + WINDOW):
        got = landing.read_window(start, start + WINDOW)
        times = every.column("receive_time")
        want = every.filter(
            pc.and_(pc.greater_equal(times, pa.scalar(start)), pc.less(times, pa.scalar(start + WINDOW)))
        )
        assert got.flows.num_rows == want.num_rows > 0
        assert sorted_table(got.flows).equals(sorted_table(want.cast(got.flows.schema)))
        assert got.source.endswith(("flow_raw", landing.topic if hasattr(landing, "topic") else ""))
        again = landing.read_window(start, start + WINDOW)
        assert again.flows.num_rows == got.flows.num_rows and again.position == got.position
    assert landing.newest_receive_time() == pc.max(every.column("receive_time")).as_py()


def test_read_window_chunks_streams_the_same_rows_in_bounded_chunks(landing):
    flows = random_flows(5_000, us(W0), span_us=WINDOW_US, seed=12)
    for piece in split_windows(flows):
        landing.write(piece)
    whole = landing.read_window(W0, W0 + WINDOW)
    read = landing.read_window_chunks(W0, W0 + WINDOW, 600)
    chunks = list(read.chunks)
    assert len(chunks) >= 5_000 // 600
    assert max(c.num_rows for c in chunks) == 600  # the last one may be shorter
    assert sorted_table(pa.concat_tables(chunks)).equals(sorted_table(whole.flows))
    assert read.position == whole.position and read.source == whole.source


def test_heartbeats_become_watermarks(landing):
    landing.write(random_flows(10, us(W0), seed=3))
    landing.heartbeat("host:1/w0", W0 + timedelta(seconds=10), 10)
    landing.heartbeat("host:1/w1", W0 + timedelta(seconds=5), 0)
    landing.heartbeat("host:1/w0", W0 + timedelta(seconds=20), 10)
    marks = {m.instance: m for m in landing.watermarks()}
    assert set(marks) == {"host:1/w0", "host:1/w1"}
    assert marks["host:1/w0"].landed_through == W0 + timedelta(seconds=20)
    assert marks["host:1/w0"].flows_landed == 10 and marks["host:1/w1"].flows_landed == 0
    assert abs((marks["host:1/w1"].heartbeat_at - datetime.now(UTC)).total_seconds()) < 60


def test_latest_heartbeat_wins_after_a_restart_on_another_clock(landing):
    landing.heartbeat("host:1/w0", W0 + timedelta(hours=2), 0)  # a receive-time run: the wall clock
    landing.heartbeat("host:1/w0", W0, 0)  # restarted, replaying the past (timestamp_source: export)
    assert [m.landed_through for m in landing.watermarks()] == [W0]


def test_postgres_stores_ipv4_as_ipv4(flowlens_config, clean_pg):
    land = open_landing(flowlens_config.model_copy(update={"mode": "minimal"}))
    try:
        land.write(random_flows(200, us(W0), seed=5, v6_share=0.5))
    finally:
        land.close()
    with psycopg.connect(clean_pg) as conn:
        families = dict(conn.execute("SELECT family(src_addr), count(*) FROM flowlens.flow_raw GROUP BY 1").fetchall())
        text = conn.execute(
            "SELECT host(src_addr) FROM flowlens.flow_raw WHERE family(src_addr) = 4 LIMIT 1"
        ).fetchone()
    assert set(families) == {4, 6} and sum(families.values()) == 200
    assert "::ffff:" not in text[0]


def test_kafka_messages_are_partitioned_by_address_pair(flowlens_config, kafka_topic):
    topic = kafka_topic("flows.raw.parts", partitions=6)
    cfg = flowlens_config.model_copy(update={"mode": "standard"})
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"raw_topic": topic})})
    cfg.ingest.kafka_message_max_flows = 300
    land = open_landing(cfg)
    flows = random_flows(3_000, us(W0), seed=8)
    try:
        land.write(flows)
    finally:
        land.close()
    consumer = Consumer(
        {"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "t", "enable.partition.eof": True}
    )
    seen = 0
    try:
        for p in range(6):
            consumer.assign([TopicPartition(topic, p, 0)])
            while (msg := consumer.poll(10)) is not None and not msg.error():
                table = from_ipc(msg.value())
                assert table.num_rows <= 300
                assert set(partition_of(table, 6).tolist()) == {p}
                assert msg.timestamp()[1] == pc.min(table.column("receive_time")).as_py().timestamp() * 1000 // 1
                seen += table.num_rows
    finally:
        consumer.close()
    assert seen == 3_000


def test_past_window_reads_whole_with_heartbeats_among_its_flows(landing):
    """Export-time replays: heartbeats land between flows of a window hours in the past.

    The instance then stops before its watermark passes the window's end (as a replay that ends
    mid-window does); the window must still read whole, and the same on every read.
    """
    first = random_flows(900, us(W0 - WINDOW), span_us=WINDOW_US, seed=21)
    second = random_flows(700, us(W0), span_us=WINDOW_US // 2, seed=22)
    landing.write(first)
    landing.heartbeat("replay/w0", W0, 900)
    landing.write(second)
    landing.heartbeat("replay/w0", W0 + WINDOW / 4, 1600)
    for flows, start in ((first, W0 - WINDOW), (second, W0)):
        got = landing.read_window(start, start + WINDOW)
        assert sorted_table(got.flows).equals(sorted_table(pa.Table.from_batches([flows]).cast(got.flows.schema)))
        assert landing.read_window(start, start + WINDOW).position == got.position


def test_a_window_summary_matches_what_reading_it_back_gives(landing):
    """The optional summarize capability (PostgreSQL only) agrees with the window's flows read back."""
    flows = random_flows(3_000, us(W0), span_us=WINDOW_US - 1, seed=12)
    landing.write(flows)
    assert isinstance(landing, WritesAsync) == (landing.name == "kafka")  # the other optional capability
    if not isinstance(landing, SummarizesWindows):
        assert landing.name == "kafka"  # counting a Kafka window means reading it: no such capability
        return
    read = landing.read_window(W0, W0 + WINDOW).flows
    summary = landing.summarize_window(W0, W0 + WINDOW)
    assert summary.rows == read.num_rows == 3_000
    assert summary.bytes == pc.sum(read.column("bytes")).as_py()
    assert summary.packets == pc.sum(read.column("packets")).as_py()
    assert (summary.first, summary.last) == (
        pc.min(read.column("receive_time")).as_py(),
        pc.max(read.column("receive_time")).as_py(),
    )
    assert landing.summarize_window(W0 + WINDOW, W0 + 2 * WINDOW) == WindowSummary(0, 0, 0, None, None)
