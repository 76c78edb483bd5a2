"""The Kafka landing's tallies of what it landed per window (``ingest.land.ledger``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest.land import open_landing
from ingest.land.ledger import Ledger, LedgerReading, WindowTally
from ingest.window import WINDOW
from ingest.worker import split_windows
from tests.ingest.flows import random_flows

W0 = datetime(2026, 11, 25, 23, 55, tzinfo=UTC)


def us(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


def test_tallies_add_up_per_partition_and_merge() -> None:
    one, two = WindowTally(), WindowTally()
    one.add(0, 10, 5, 500, 7)
    one.add(0, 4, 1, 100, 1)
    one.add(3, 9, 2, 200, 2)
    two.add(0, 20, 1, 50, 1)
    one.merge(two)
    assert (one.rows, one.bytes, one.packets, one.messages) == (9, 850, 11, 4)
    assert one.partitions == {0: [4, 20, 3], 3: [9, 9, 1]}
    assert WindowTally.from_json(json.loads(json.dumps(one.as_json()))) == one


def test_a_ledger_hands_out_each_change_once_and_again_after_a_failed_publish() -> None:
    ledger = Ledger()
    ledger.record(300, 1, 0, 10, 1000, 20)
    ledger.record(600, 1, 1, 5, 500, 10)
    first = ledger.take_changed()
    assert set(first) == {300, 600} and json.loads(first[300])["rows"] == 10
    assert ledger.take_changed() == {} and not ledger.pending()
    ledger.unpublished([600])
    ledger.record(300, 2, 0, 1, 100, 2)
    again = ledger.take_changed()
    assert {w: json.loads(v)["rows"] for w, v in again.items()} == {300: 11, 600: 5}  # cumulative
    assert ledger.key(300) == f"300/{ledger.id}".encode() and Ledger().id != ledger.id


def test_deleted_partitions_are_those_whose_log_starts_after_the_window() -> None:
    tally = WindowTally()
    tally.add(0, 100, 1, 1, 1)
    tally.add(1, 50, 1, 1, 1)
    assert LedgerReading(tally, {0: 100, 1: 51}).deleted() == {1: (50, 51)}
    assert LedgerReading(None, {}).deleted() == {}


@pytest.mark.integration
def test_heartbeats_publish_what_the_broker_acknowledged(flowlens_config, kafka_topic) -> None:
    topic = kafka_topic("flows.raw.ledger")
    cfg = flowlens_config.model_copy(update={"mode": "standard"})
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"raw_topic": topic})})
    cfg.ingest.kafka_message_max_flows = 250
    flows = random_flows(3_000, us(W0 - timedelta(minutes=2)), span_us=4 * 60 * 1_000_000, seed=21)
    first, second = open_landing(cfg), open_landing(cfg)  # two ingest processes
    try:
        pieces = split_windows(flows)
        for piece in pieces:
            first.write(piece)
        second.write(pieces[-1])
        first.heartbeat("a/w0", W0 + WINDOW, flows.num_rows)
        second.heartbeat("b/w0", W0 + WINDOW, pieces[-1].num_rows)
        every = pa.Table.from_batches([flows, pieces[-1]])
        for start in (W0 - WINDOW, W0):
            times = every.column("receive_time")
            want = every.filter(
                pc.and_(pc.greater_equal(times, pa.scalar(start)), pc.less(times, pa.scalar(start + WINDOW)))
            )
            reading = first.landed_tally(start)
            assert reading.tally is not None and reading.deleted() == {}
            got = (reading.tally.rows, reading.tally.bytes, reading.tally.packets)
            assert got == (want.num_rows, pc.sum(want["bytes"]).as_py(), pc.sum(want["packets"]).as_py())
            assert sum(count for _, _, count in reading.tally.partitions.values()) == reading.tally.messages
        assert first.landed_tally(W0 + WINDOW).tally is None  # nothing landed there
    finally:
        first.close()
        second.close()
