"""The disk spool: past the sampling level flows go to disk in order, come back in order, and a full
spool falls back to the sampling and drop rules."""

from __future__ import annotations

import pyarrow as pa

from ingest.backpressure import FlowQueue
from ingest.config import IngestionBackpressure
from ingest.spool import Spool, read
from tests.ingest.flows import random_flows

T0 = 1_764_000_000_000_000
LEVELS = IngestionBackpressure(sample_at_queue_depth=100, drop_at_queue_depth=150, max_queue_depth=150,
                               sample_rate=5, sample_at_queue_seconds=0, drop_at_queue_seconds=0)  # fmt: skip


def numbered(n: int, first: int) -> pa.RecordBatch:
    """``n`` flows whose src_port numbers them ``first``, ``first + 1``, ... (to check the order)."""
    batch = random_flows(n, T0 + first, seed=first, null_share=0)
    return batch.set_column(batch.schema.get_field_index("src_port"), "src_port",
                            pa.array(range(first, first + n), pa.uint16()))  # fmt: skip


def drain(queue: FlowQueue) -> list[int]:
    """Land everything, refilling from the spool as the landing loop does; the src_ports in order."""
    ports: list[int] = []
    while True:
        item = queue.get(timeout=0.01)
        if item is None:
            segment = queue.spool.oldest()
            if segment is None:
                return ports
            queue.readmit(read(segment), segment.oldest_us)
            queue.spool.discard(segment)
            continue
        ports += item.batch.column("src_port").to_pylist()
        queue.done([item])


def test_past_the_sampling_level_flows_go_to_disk_and_come_back_in_order(tmp_path):
    queue = FlowQueue(LEVELS, spool=Spool(tmp_path, 1 << 20))
    first = queue.admit(numbered(80, 0))
    second = queue.admit(numbered(80, 80))  # 20 fit below the level, 60 go to disk
    third = queue.admit(numbered(10, 160))  # the spool holds flows: these queue behind them on disk
    assert (first.spooled, second.spooled, third.spooled) == (0, 60, 10)
    assert sum(a.sampled + a.dropped for a in (first, second, third)) == 0
    assert queue.depth == 100 and queue.spool.flows == 70 and queue.spool.bytes > 0
    assert [s.path.name.split("-")[2] for s in (queue.spool.oldest(),)] == ["60.arrow"]
    assert drain(queue) == list(range(170))  # every flow, in arrival order
    assert queue.depth == 0 and queue.spool.flows == queue.spool.bytes == 0 and not list(tmp_path.iterdir())


def test_a_full_spool_falls_back_to_sampling_and_drops(tmp_path):
    queue = FlowQueue(LEVELS, spool=Spool(tmp_path, 0))  # no room at all
    result = queue.admit(numbered(400, 0))
    assert (result.spooled, result.sampled, result.dropped) == (0, 200, 50)  # as without a spool
    assert result.kept.num_rows == 100 + 50 and queue.depth == 150 and queue.spool.flows == 0


def test_a_spool_left_by_a_previous_process_is_found_and_landed_first(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    assert spool.put(numbered(30, 0), T0) and spool.put(numbered(30, 30), T0 + 30)
    (tmp_path / "000000000099-1-5.tmp").write_bytes(b"half written")
    again = Spool(tmp_path, 1 << 20)  # a new process on the same directory
    assert again.flows == 60 and again.bytes == spool.bytes and again.oldest_us() == T0
    assert not list(tmp_path.glob("*.tmp"))
    queue = FlowQueue(LEVELS, spool=again)
    assert queue.admit(numbered(5, 60)).spooled == 5  # behind the old spool, not ahead of it
    assert drain(queue) == list(range(65))
