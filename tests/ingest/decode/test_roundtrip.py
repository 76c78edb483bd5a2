"""encode -> decode round trips: random flows (several seeds, property style), v5/v9/IPFIX, IPv4/IPv6."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.decode import Decoder
from ingest.schema import FLOW_SCHEMA
from ingest.tools.encode import IPFIX_IPV6_FIELDS, V9_IPV6_FIELDS, IpfixEncoder, V9Encoder, encode_v5
from tests.ingest.decode.helpers import EXPORT_TIME, EXPORTER, RECEIVE_US, mapped, random_flows, times_us

SEEDS = [1, 2, 3, 4, 5]


def _assert_same(batch, flows: dict, *, widths: dict[str, int], version: int) -> None:
    assert batch.schema.equals(FLOW_SCHEMA)
    n = len(flows["bytes"])
    assert batch.num_rows == n
    for name in ("src_addr", "dst_addr"):
        got = np.frombuffer(batch.column(name).buffers()[1], np.uint8)[: n * 16].reshape(n, 16)
        assert (got == flows[name]).all(), name
    for name, width in widths.items():
        expected = flows[name].astype(np.uint64) & np.uint64((1 << (8 * width)) - 1)
        assert (batch.column(name).to_numpy().astype(np.uint64) == expected).all(), name
    assert (times_us(batch, "flow_start") == flows["flow_start"]).all()
    assert (times_us(batch, "flow_end") == flows["flow_end"]).all()
    assert set(batch.column("flow_version").to_pylist()) == {version}
    assert set(batch.column("sampling_rate").to_pylist()) == {1}
    assert set(batch.column("exporter").to_pylist()) == {mapped(EXPORTER)}


@pytest.mark.parametrize("seed", SEEDS)
def test_v5(seed: int) -> None:
    flows = random_flows(301, seed)
    packets = encode_v5(flows, sys_uptime_ms=4_000_000_000, unix_secs=EXPORT_TIME, seq=7)
    assert len(packets) == 11 and all(len(p) <= 24 + 30 * 48 for p in packets)
    batch = Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    widths = {"src_port": 2, "dst_port": 2, "protocol": 1, "tcp_flags": 1, "bytes": 4, "packets": 4,
              "input_if": 2, "output_if": 2, "src_as": 2, "dst_as": 2}  # fmt: skip
    _assert_same(batch, flows, widths=widths, version=5)
    assert batch.column("direction").null_count == 301


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ipv6", [False, True])
def test_v9(seed: int, ipv6: bool) -> None:
    flows = random_flows(500, seed, ipv6)
    encoder = V9Encoder(260 + seed, V9_IPV6_FIELDS if ipv6 else None, domain=seed, template_every=5)
    packets = encoder.packets(flows, EXPORT_TIME)
    batch = Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    widths = {"src_port": 2, "dst_port": 2, "protocol": 1, "tcp_flags": 1, "bytes": 4, "packets": 4,
              "input_if": 2, "output_if": 2, "src_as": 2, "dst_as": 2, "direction": 1}  # fmt: skip
    _assert_same(batch, flows, widths=widths, version=9)
    assert set(batch.column("observation_domain").to_pylist()) == {seed}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ipv6", [False, True])
def test_ipfix(seed: int, ipv6: bool) -> None:
    flows = random_flows(500, seed, ipv6)
    encoder = IpfixEncoder(300, IPFIX_IPV6_FIELDS if ipv6 else None, domain=70000 + seed, pad=seed % 2 == 0)
    packets = encoder.packets(flows, EXPORT_TIME)
    batch = Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    widths = {"src_port": 2, "dst_port": 2, "protocol": 1, "tcp_flags": 2, "bytes": 8, "packets": 8,
              "input_if": 4, "output_if": 4, "src_as": 4, "dst_as": 4, "direction": 1}  # fmt: skip
    _assert_same(batch, flows, widths=widths, version=10)


@pytest.mark.parametrize("unit_fields", [((150, 4), (151, 4)), ((154, 8), (155, 8)), ((156, 8), (157, 8))])
def test_ipfix_absolute_time_units(unit_fields: tuple) -> None:
    """Seconds, microseconds and nanoseconds IEs (150/151, 154/155, 156/157; NTP format for µs/ns)."""
    flows = random_flows(50, 9)
    if unit_fields[0][0] == 150:  # whole seconds only
        flows["flow_start"] -= flows["flow_start"] % 1_000_000
        flows["flow_end"] -= flows["flow_end"] % 1_000_000
    else:
        flows["flow_start"] += 123  # sub-millisecond precision survives the NTP formats
    fields = ((8, 4), (12, 4), (1, 8), (2, 8), *unit_fields)
    packets = IpfixEncoder(256, fields).packets(flows, EXPORT_TIME)
    batch = Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    start = times_us(batch, "flow_start")
    assert np.abs(start - flows["flow_start"]).max() <= 1  # NTP fractions round down by at most 1 µs
    assert np.abs(times_us(batch, "flow_end") - flows["flow_end"]).max() <= 1


def test_decode_many_equals_decode_one_by_one() -> None:
    """Batching across packets (the fast path) gives exactly what packet-by-packet decoding gives."""
    flows = random_flows(400, 11)
    packets = V9Encoder(256, domain=1, template_every=4).packets(flows, EXPORT_TIME)
    packets += IpfixEncoder(256, domain=1).packets(flows, EXPORT_TIME)
    packets += encode_v5(flows, sys_uptime_ms=10**8, unix_secs=EXPORT_TIME)
    items = [(EXPORTER, p, RECEIVE_US + i) for i, p in enumerate(packets)]
    one = Decoder()
    singles = [one.decode(p, e, t) for e, p, t in items]
    many = Decoder().decode_many(items)
    import pyarrow as pa

    expected = pa.Table.from_batches(singles).sort_by([("receive_time", "ascending"), ("bytes", "ascending")])
    got = pa.Table.from_batches([many]).sort_by([("receive_time", "ascending"), ("bytes", "ascending")])
    assert got.equals(expected)


def test_mixed_exporters_in_one_call_keep_their_own_context() -> None:
    """v5 from two exporters with different clocks and rates, interleaved in one decode_many."""
    a, b = random_flows(30, 21), random_flows(30, 22)
    pa_ = encode_v5(a, sys_uptime_ms=10**7, unix_secs=EXPORT_TIME, sampling_interval=10)[0]
    pb = encode_v5(b, sys_uptime_ms=(1 << 32) - 5, unix_secs=EXPORT_TIME + 7)[0]
    batch = Decoder().decode_many([("192.0.2.1", pa_, 1), ("192.0.2.2", pb, 2), ("192.0.2.1", pa_, 3)])
    exporters = batch.column("exporter").to_pylist()
    assert exporters == [mapped("192.0.2.1")] * 30 + [mapped("192.0.2.2")] * 30 + [mapped("192.0.2.1")] * 30
    assert batch.column("sampling_rate").to_pylist() == [10] * 30 + [1] * 30 + [10] * 30
    starts = times_us(batch, "flow_start")
    assert (starts[:30] == a["flow_start"]).all() and (starts[30:60] == b["flow_start"]).all()
