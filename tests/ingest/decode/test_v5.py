"""``v5.flow_columns``, the NetFlow v5 column builder, against the general per-template rules.

The front end decodes v5 records with ``v5.flow_columns``; every other layout goes through
``columns.forward`` and the decoder's sampling rules. Both must give the same batch for the
same records: these tests build v5 packets that exercise every input of the builder (several
exporters, header sampling intervals and configured defaults, packets of different sizes, clocks
that wrap or give times outside 1970-2200) and compare the two, column by column.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pytest

from ingest.decode import Decoder, columns, frontend, v5
from ingest.decode.calls import Call as _Call
from ingest.decode.context import Context, packet_table
from ingest.tools.encode import encode_v5
from tests.ingest.decode.helpers import EXPORT_TIME, RECEIVE_US, random_flows


def _both(decoder: Decoder, items: list) -> tuple[pa.RecordBatch | None, pa.RecordBatch]:
    """(``v5.flow_columns``, the general rules) over the v5 records of ``items`` as the front end groups them."""
    batch = frontend.Batch(items, decoder._exporter_bytes)
    (group,) = decoder._front(_Call(), batch)
    assert group.template is None
    recs = batch.records(group.starts, group.counts, v5.RECORD_LEN, v5.RECORD)
    ids = batch.exporter_index[group.rows] if batch.exporter_index is not None else None
    packet = packet_table(
        batch.recv[group.rows], batch.head[group.rows], ids, batch.exporters, decoder.store.resolve, 5
    )
    fast = v5.flow_columns(recs, Context(packet, None, group.counts, None))
    general = decoder._assembler.group_columns(recs, None, Context(packet, None, group.counts, None), None)
    return (None if fast is None else columns.to_batch(fast)), columns.to_batch(general)


def _assert_same(fast: pa.RecordBatch | None, general: pa.RecordBatch) -> None:
    assert fast is not None
    assert fast.num_rows == general.num_rows > 0
    for name in general.schema.names:
        assert fast.column(name).equals(general.column(name)), name


def _packets(seed: int, n: int, per_packet: int, **header: int) -> list[bytes]:
    return encode_v5(random_flows(n, seed), unix_secs=EXPORT_TIME, flows_per_packet=per_packet, **header)


def test_exporters_sampling_and_packet_sizes() -> None:
    """Three exporters interleaved: one unsampled, one with a header sampling interval, one
    with none but a configured default for its subnet; 30, 7 and 1 records per packet."""
    decoder = Decoder(sampling_overrides={"198.51.100.0/24": 64})
    sources = {
        "192.0.2.1": _packets(1, 300, 30, sys_uptime_ms=86_400_000),
        "192.0.2.2": _packets(2, 70, 7, sys_uptime_ms=86_400_000, sampling_interval=100, sampling_mode=1),
        "198.51.100.7": _packets(3, 12, 1, sys_uptime_ms=86_400_000),
    }
    items = [
        (exporter, packets[i], RECEIVE_US + i)
        for i in range(12)
        for exporter, packets in sources.items()
        if i < len(packets)
    ]
    fast, general = _both(decoder, items)
    _assert_same(fast, general)
    rates = dict(zip(*np.unique(fast.column("sampling_rate").to_numpy(), return_counts=True), strict=True))
    assert rates == {1: 300, 64: 12, 100: 70}


def test_one_exporter_one_rate() -> None:
    decoder = Decoder(default_sampling_rate=10)
    packets = _packets(4, 240, 30, sys_uptime_ms=3_600_000)
    fast, general = _both(decoder, [("203.0.113.5", p, RECEIVE_US) for p in packets])
    _assert_same(fast, general)
    assert set(fast.column("sampling_rate").to_pylist()) == {10}
    assert fast.column("direction").null_count == fast.num_rows


@pytest.mark.parametrize("uptime_ms", [1_000, 2**32 - 5_000, 2**32 + 1_000])
def test_uptime_wraparound(uptime_ms: int) -> None:
    """Exporters up for about 49.7 days (or just wrapped): records stamped before the wrap."""
    decoder = Decoder()
    flows = random_flows(60, 5)
    packets = encode_v5(flows, sys_uptime_ms=uptime_ms, unix_secs=EXPORT_TIME)
    fast, general = _both(decoder, [("192.0.2.9", p, RECEIVE_US) for p in packets])
    _assert_same(fast, general)


def test_clock_near_the_epoch_gives_null_times() -> None:
    """An exporter whose clock says 1970: flows starting before it are null, the rest kept."""
    decoder = Decoder()
    flows = random_flows(60, 6)
    shift = (EXPORT_TIME - 600) * 1_000_000  # export time 10 minutes after the epoch
    flows["flow_start"] = flows["flow_start"] - shift
    flows["flow_end"] = flows["flow_end"] - shift
    packets = encode_v5(flows, sys_uptime_ms=86_400_000, unix_secs=600)
    fast, general = _both(decoder, [("192.0.2.9", p, RECEIVE_US) for p in packets])
    _assert_same(fast, general)
    starts = fast.column("flow_start")
    assert 0 < starts.null_count < len(starts)


def test_boot_time_from_options_takes_the_general_rules() -> None:
    """A boot time learned for the exporter (options data, domain 0) makes times absolute from
    it; the builder leaves such packets to ``columns.forward``."""
    decoder = Decoder()
    exporter = "192.0.2.77"
    boot_ms = EXPORT_TIME * 1000 - 7_200_000
    decoder.system_init[(ipaddress.IPv6Address(f"::ffff:{exporter}").packed, 0)] = boot_ms
    packets = _packets(7, 30, 30, sys_uptime_ms=86_400_000)
    fast, general = _both(decoder, [(exporter, p, RECEIVE_US) for p in packets])
    assert fast is None
    first = np.frombuffer(packets[0], v5.RECORD, 1, v5.HEADER_LEN)["start_uptime"].astype(np.int64)
    got = decoder.decode(packets[0], exporter, RECEIVE_US).column("flow_start").cast(pa.int64()).to_numpy()
    assert got[0] == (boot_ms + int(first[0])) * 1000 == general.column("flow_start").cast(pa.int64())[0].as_py()
