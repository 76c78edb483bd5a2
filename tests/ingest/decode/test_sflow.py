"""sFlow v5 decoding: samples, rates, interfaces, agents, gateway AS numbers, counters, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest

from ingest.decode import Decoder, DecoderLimits, headers, sflow
from ingest.decode.limits import DecoderStats
from ingest.decode.xdr import Buffer
from ingest.schema import FLOW_SCHEMA, SFLOW_VERSION
from ingest.tools.encode import encode_v5
from ingest.tools.encode_sflow import (
    AS_SEQUENCE,
    AS_SET,
    SflowEncoder,
    counter_sample,
    datagram,
    example_packets,
    flow_sample,
    frame,
    gateway_record,
    header_record,
    interface_counters,
    ipv4_record,
    router_record,
    switch_record,
    vlan,
)
from ingest.tools.generate import Generator, Plan
from tests.ingest.decode.helpers import EXPORT_TIME, EXPORTER, RECEIVE_US, addresses, column, random_flows

TCP = frame("10.0.0.1", "10.0.0.2", 6, 40000, 443, 1000, 0x18)  # IP length 1040
ARP = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)


def _ports(flows: dict, name: str) -> list[int]:
    """What the sampled packets carry: ports for TCP and UDP only (ICMP's are its type and code, 0 here)."""
    return [int(p) if proto in (6, 17) else 0 for p, proto in zip(flows[name], flows["protocol"], strict=True)]


def _decode(payloads: list[bytes], decoder: Decoder | None = None) -> tuple[pa.RecordBatch, Decoder]:
    decoder = decoder or Decoder()
    return decoder.decode_many([(EXPORTER, p, RECEIVE_US) for p in payloads]), decoder


def test_flow_sample_counts_ip_bytes_times_the_rate() -> None:
    batch, decoder = _decode(
        [datagram("192.0.2.1", [flow_sample([header_record(TCP)], 1000, input_if=3, output_if=4)])]
    )
    assert batch.schema == FLOW_SCHEMA and batch.num_rows == 1
    assert column(batch, "bytes") == [1040 * 1000] and column(batch, "packets") == [1000]
    assert column(batch, "sampling_rate") == [1000]
    assert column(batch, "flow_version") == [SFLOW_VERSION]
    assert column(batch, "input_if") == [3] and column(batch, "output_if") == [4]
    assert column(batch, "flow_start") == [None] and column(batch, "src_as") == [None]
    assert addresses(batch, "src_addr") == ["10.0.0.1"] and column(batch, "tcp_flags") == [0x18]
    assert decoder.stats.packets[SFLOW_VERSION] == 1 and decoder.stats.as_dict()["packets"]["sflow"] == 1
    assert not decoder.stats.errors


def test_agent_and_sub_agent_are_exporter_and_domain() -> None:
    sample = flow_sample([header_record(TCP)], 10)
    batch, _ = _decode([datagram("192.0.2.7", [sample], sub_agent=4), datagram("2001:db8::77", [sample], sub_agent=9)])
    assert addresses(batch, "exporter") == ["192.0.2.7", "2001:db8::77"]  # not the UDP source
    assert column(batch, "observation_domain") == [4, 9]


def test_interfaces_discarded_multiple_and_unknown_are_null() -> None:
    samples = [
        flow_sample([header_record(TCP)], 1, input_if=5, output_if=(1 << 30) | 7),  # output: packet discarded
        flow_sample([header_record(TCP)], 1, input_if=(2 << 30) | 3, output_if=0x3FFFFFFF),  # multiple; unknown
        flow_sample([header_record(TCP)], 1, input_if=11, output_if=12, expanded=True),
    ]
    batch, _ = _decode([datagram("192.0.2.1", samples)])
    assert column(batch, "input_if") == [5, None, 11]
    assert column(batch, "output_if") == [None, None, 12]


def test_rate_zero_takes_the_configured_rate() -> None:
    sample = flow_sample([header_record(TCP)], 0)
    decoder = Decoder(default_sampling_rate=5, sampling_overrides={"192.0.2.0/24": 64})
    batch, _ = _decode([datagram("192.0.2.1", [sample]), datagram("198.51.100.1", [sample])], decoder)
    assert column(batch, "sampling_rate") == [64, 5]  # overrides match the agent address
    assert column(batch, "bytes") == [1040 * 64, 1040 * 5]


def test_header_wins_over_sampled_ip_and_gateway_gives_as_numbers() -> None:
    both = [ipv4_record("1.1.1.1", "2.2.2.2", 99, 17, 1, 2), header_record(TCP), switch_record(1, 2)]
    gw = gateway_record("9.9.9.9", 64500, 64501, 64502, [64510, 64511])
    local = gateway_record("9.9.9.9", 64500, 64501, 0, [])
    samples = [flow_sample(both, 2), flow_sample([ipv4_record("1.1.1.1", "2.2.2.2", 99, 17, 1, 2), gw], 2),
               flow_sample([header_record(TCP), local], 2)]  # fmt: skip
    batch, _ = _decode([datagram("192.0.2.1", samples)])
    assert addresses(batch, "src_addr") == ["10.0.0.1", "1.1.1.1", "10.0.0.1"]
    assert column(batch, "bytes") == [2080, 198, 2080]
    assert column(batch, "src_as") == [None, 64501, 64501]
    assert column(batch, "dst_as") == [None, 64511, 64500]  # the path's last AS; empty path: the router's


def test_gateway_and_router_records_give_next_hop_path_and_communities() -> None:
    """Every sample of a call its own routing context (vectorized over the records); a gateway
    record whose parts do not fit its length gives nulls, and the flow is still kept."""
    gw = gateway_record("2001:db8::fe", 64500, 64501, 64502, [64510, 64511], [64500 << 16 | 7])
    sets = gateway_record("9.9.9.8", 64500, 1, 2, segments=[(AS_SEQUENCE, [7, 8]), (AS_SET, [9])])
    body = sets[8:]
    lying = sets[:8] + body[:28] + struct.pack("!I", 5000) + body[32:]  # the first segment claims 5000 ASes
    samples = [flow_sample([header_record(TCP), gw], 2), flow_sample([header_record(TCP)], 2),
               flow_sample([router_record("9.9.9.7", 24, 24), header_record(TCP)], 2, expanded=True),
               flow_sample([header_record(TCP), sets], 2), flow_sample([header_record(TCP), lying], 2)]  # fmt: skip
    batch, decoder = _decode([datagram("192.0.2.1", samples)])
    assert addresses(batch, "next_hop") == ["2001:db8::fe", None, "9.9.9.7", "9.9.9.8", None]
    assert column(batch, "as_path") == [[64510, 64511], None, None, [7, 8, 9], None]
    assert column(batch, "communities") == [[64500 << 16 | 7], None, None, [], None]
    assert column(batch, "src_as") == [64501, None, None, 1, None]
    assert column(batch, "dst_as") == [64511, None, None, 9, None]
    assert batch.num_rows == 5 and "internal" not in decoder.stats.errors


def test_non_ip_samples_give_no_flow_and_are_counted() -> None:
    batch, decoder = _decode([datagram("192.0.2.1", [flow_sample([header_record(ARP)], 1), flow_sample([], 1),
                                                     flow_sample([header_record(TCP)], 1)])])  # fmt: skip
    assert batch.num_rows == 1
    assert decoder.stats.events["sflow_non_ip"] == 1 and decoder.stats.events["sflow_samples"] == 3


def test_counter_samples_are_interface_metrics_not_flows() -> None:
    first = counter_sample([interface_counters(3, {"in_octets": 10, "out_errors": 1})])
    later = counter_sample([interface_counters(3, {"in_octets": 25})], expanded=True)
    batch, decoder = _decode([datagram("192.0.2.1", [first], sub_agent=2), datagram("192.0.2.1", [later], sub_agent=2)])
    assert batch.num_rows == 0
    (key,) = decoder.interface_counters.latest
    assert key[1:] == (2, 3)
    assert decoder.interface_counters.latest[key]["in_octets"] == 25  # the latest wins
    limited = Decoder(limits=DecoderLimits(max_sampler_entries=1))
    other = counter_sample([interface_counters(4)])
    _decode([datagram("192.0.2.1", [first, other])], limited)
    assert limited.stats.errors["counter_limit"] == 1 and len(limited.interface_counters.latest) == 1


def test_bad_datagrams_are_counted_and_the_valid_part_kept() -> None:
    good = flow_sample([header_record(TCP)], 1)
    whole = datagram("192.0.2.1", [good, good])
    bad_agent = whole[:4] + struct.pack("!I", 3) + whole[8:]
    cut_sample = whole[: len(whole) - 10]  # the second sample runs past the end
    cut_header = whole[:20]
    long_record = datagram("192.0.2.1", [good[: 8 + 28] + struct.pack("!I", 1) + struct.pack("!II", 1, 5000)])
    batch, decoder = _decode([bad_agent, cut_sample, cut_header, long_record, b"\x00\x00\x00\x05"])
    assert batch.num_rows == 1  # the first sample of ``cut_sample``
    assert decoder.stats.errors["malformed"] == 1
    assert decoder.stats.errors["truncated"] == 4  # a sample, a datagram header, a record, a 4-byte datagram
    assert "internal" not in decoder.stats.errors


def test_one_call_mixes_netflow_ipfix_and_sflow() -> None:
    flows = random_flows(30, 4)
    v5 = encode_v5(flows, sys_uptime_ms=1_000_000, unix_secs=EXPORT_TIME)
    sflow = SflowEncoder("192.0.2.9", 100).datagrams(flows)
    batch, decoder = _decode(v5 + sflow + v5)
    assert batch.num_rows == 90
    assert sorted(set(column(batch, "flow_version"))) == [5, SFLOW_VERSION]
    assert decoder.stats.packets[5] == 2 * len(v5) and decoder.stats.packets[SFLOW_VERSION] == len(sflow)
    ours = batch.filter(pa.compute.equal(batch.column("flow_version"), SFLOW_VERSION))
    assert addresses(ours, "src_addr") == addresses(batch.slice(0, 30), "src_addr")
    assert column(ours, "dst_port") == _ports(flows, "dst_port")


def test_per_packet_path_gives_the_same_flows() -> None:
    """Items the front end cannot read at once (here: a memoryview payload among bytes) take
    the per-packet path; sFlow decodes the same there."""
    payloads = SflowEncoder("192.0.2.9", 10).datagrams(random_flows(50, 5))
    fast, _ = _decode(payloads)
    slow = Decoder().decode_many([("192.0.2.1", memoryview(p), RECEIVE_US) for p in payloads] + [(None, b"", 0)])
    assert slow.to_pylist() == fast.to_pylist()


@pytest.mark.parametrize("header_len", [128, 64, 40])
def test_encoder_round_trip(header_len: int) -> None:
    flows = random_flows(200, 6)
    payloads = SflowEncoder("192.0.2.9", 256, header_len=header_len).datagrams(flows)
    batch, decoder = _decode(payloads)
    assert batch.num_rows == 200
    assert column(batch, "src_port") == _ports(flows, "src_port")
    assert column(batch, "protocol") == list(flows["protocol"])
    assert all(b % 256 == 0 and b > 0 for b in column(batch, "bytes"))
    assert "internal" not in decoder.stats.errors


def test_generator_sends_sflow_and_its_truth_is_what_decodes() -> None:
    generator = Generator(Plan(rate=0, flows=700, versions=(SFLOW_VERSION, 9), exporters=2, chunk=100))
    items = [(e.source, p, RECEIVE_US) for e, packets, _ in generator.steps(lambda: RECEIVE_US) for p in packets]
    batch = Decoder().decode_many(items)
    truth = generator.truth()
    assert batch.num_rows == 700 == pa.compute.sum(truth.column("flows")).as_py()
    assert pa.compute.sum(batch.column("bytes")).as_py() == pa.compute.sum(truth.column("bytes")).as_py()
    assert pa.compute.sum(batch.column("packets")).as_py() == pa.compute.sum(truth.column("packets")).as_py()
    assert set(column(batch, "flow_version")) == {9, SFLOW_VERSION}


def test_datagram_fast_lane_agrees_with_the_header_parser() -> None:
    """Common samples are read from one fixed-width row each (``sflow_rows.py``); the rest go
    through ``headers.parse``. Every kind, tagged or not, in compact or expanded samples, with
    extended records after the header record or before it, gives what the parser alone gives."""
    rng = np.random.default_rng(9)
    packets = [*example_packets(), ARP]
    for i in range(300):
        v6 = i % 3 == 0
        src, dst = (f"2001:db8::{i + 1:x}", f"2001:db8::1:{i:x}") if v6 else (f"10.1.{i % 250}.1", f"10.2.{i % 250}.2")
        protocol = [6, 17, 1, 132, 47][i % 5]
        packet = frame(src, dst, protocol, int(rng.integers(1, 65535)), int(rng.integers(1, 65535)),
                       int(rng.integers(0, 1400)), int(rng.integers(0, 256)))  # fmt: skip
        packets.append(vlan(packet, i % 4000) if i % 2 else packet)
    cut = [p[: int(rng.integers(20, 140))] if i % 7 == 0 else p for i, p in enumerate(packets)]

    def records(i: int, packet: bytes) -> list[bytes]:
        header = header_record(packet, 128)
        return (
            [switch_record(5, 6), header] if i % 5 == 3 else [header, switch_record(5, 6)] if i % 3 == 1 else [header]
        )

    samples = [flow_sample(records(i, p), 1, expanded=i % 4 == 2) for i, p in enumerate(cut)]
    batch, _ = _decode([datagram("192.0.2.1", samples[i : i + 7]) for i in range(0, len(samples), 7)])
    frames, lengths = headers.frames_matrix([p[:128] for p in cut])
    parsed = headers.parse(frames, lengths)
    ip = parsed.is_ip
    assert batch.num_rows == int(ip.sum())
    assert column(batch, "src_addr") == [v.tobytes() for v in parsed.src[ip]]
    assert column(batch, "dst_addr") == [v.tobytes() for v in parsed.dst[ip]]
    for name in ("protocol", "src_port", "dst_port", "tcp_flags"):
        assert column(batch, name) == getattr(parsed, name)[ip].tolist(), name
    assert column(batch, "bytes") == parsed.ip_length[ip].tolist()


def _mixed_datagrams() -> list[bytes]:
    """Datagrams of every walk case in one call: well formed (1 to 20 samples, so some need a
    second block of rounds; sample sizes mixed; flow and counter samples), a last sample cut
    short, a sample length off the 4-byte alignment, more samples announced than sent."""
    rng = np.random.default_rng(11)
    out = []
    for i in range(60):
        samples = []
        for j in range(int(rng.integers(1, 21))):
            if j % 6 == 5:
                samples.append(counter_sample([interface_counters(j)]))
            else:
                packet = frame(f"10.3.{i}.{j + 1}", "10.4.0.1", 6, 1000 + j, 443, int(rng.integers(0, 300)))
                samples.append(flow_sample([header_record(packet, int(rng.choice([64, 96, 128])))], 100))
        payload = datagram("192.0.2.5", samples, sub_agent=i % 3)
        if i % 10 == 3:  # the last sample cut short
            payload = payload[: len(payload) - 12]
        elif i % 10 == 6:  # the first sample's length 2 bytes off: misaligned (or past the end)
            first = 28 + 4
            payload = (
                payload[:first]
                + struct.pack("!I", struct.unpack_from("!I", payload, first)[0] + 2)
                + payload[first + 4 :]
            )
        elif i % 10 == 8:  # two more samples announced than sent
            payload = payload[:24] + struct.pack("!I", len(samples) + 2) + payload[28:]
        out.append(payload)
    return out


def _walk_reference(payload: bytes) -> tuple[list[tuple[int, int, int]], int, int]:
    """The samples of one datagram walked one by one in Python: (format, body offset, length),
    truncated, malformed (the rules of ``sflow._walk``)."""
    pos, end = 28, len(payload)
    left = min(struct.unpack_from("!I", payload, 24)[0], max(end - pos, 0) // 8)
    items: list[tuple[int, int, int]] = []
    for _ in range(left):
        fmt, length = struct.unpack_from("!II", payload + bytes(8), pos)
        if pos + 8 + length > end:
            return items, 1, 0
        if length % 4:
            return items, 0, 1
        items.append((fmt, pos + 8, length))
        pos += 8 + length
    return items, 0, 0


def test_sample_walk_agrees_with_a_datagram_by_datagram_walk_on_mixed_calls() -> None:
    """The walk's quick check (blocks whose items are all whole and aligned) and its detailed
    checks give what a plain walk of each datagram gives, whatever else shares the call."""
    payloads = _mixed_datagrams()
    padded = [p + bytes(-len(p) % 4) for p in payloads]  # the decoder realigns datagrams likewise
    buffer = b"".join(padded) + bytes(sflow.MAX_HEADER + headers.PAD + 64)
    offsets = np.cumsum([len(p) for p in padded]) - np.array([len(p) for p in padded])
    sizes = np.array([len(p) for p in payloads])
    count = np.array([struct.unpack_from("!I", p, 24)[0] for p in payloads])
    stats = DecoderStats()
    owner, fmt, body, length = sflow._walk(Buffer(buffer), offsets + 28, offsets + sizes, count, stats)
    expected, truncated, malformed = [], 0, 0
    for i, p in enumerate(payloads):
        items, cut, bad = _walk_reference(p)
        expected += [(i, f, int(offsets[i]) + b, n) for f, b, n in items]
        truncated, malformed = truncated + cut, malformed + bad
    assert list(zip(owner.tolist(), fmt.tolist(), body.tolist(), length.tolist(), strict=True)) == expected
    assert (stats.errors["truncated"], stats.errors["malformed"]) == (truncated, malformed) == (12, 6)


def test_mixed_call_decodes_as_its_datagrams_one_by_one() -> None:
    """Well-formed and bad datagrams in one call give the flows and counts each gives alone."""
    payloads = _mixed_datagrams()
    together, decoder = _decode(payloads)
    alone = Decoder()
    parts = [alone.decode_many([(EXPORTER, p, RECEIVE_US)]) for p in payloads]
    assert together.num_rows > 0 and together.equals(pa.Table.from_batches(parts).combine_chunks().to_batches()[0])
    assert decoder.stats.errors == alone.stats.errors and decoder.stats.events == alone.stats.events
