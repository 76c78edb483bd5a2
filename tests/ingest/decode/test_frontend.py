"""The vectorized front end of ``decode_many`` against the reference: decoding packet by packet.

``decode_many`` reads every header of a call at once and decodes the common packets without
walking them; these tests mix in everything that must still be seen in order (template changes,
withdrawals, expiry, truncation, garbage) and check that the flows and every counter are exactly
what one ``decode`` per packet gives.
"""

from __future__ import annotations

import itertools
import random
import struct

import numpy as np
import pyarrow as pa
import pytest

from ingest.decode import Decoder, DecoderLimits
from ingest.decode.decoder import MAX_REPLANS
from ingest.tools.encode import IPFIX_IPV6_FIELDS, IpfixEncoder, V9Encoder, encode_v5
from tests.ingest.decode.helpers import EXPORT_TIME, RECEIVE_US, column, random_flows

V9_SHORT = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4), (22, 4), (21, 4))  # another layout
SORT_KEYS = ["receive_time", "exporter", "flow_version", "bytes", "packets", "src_port", "dst_port", "flow_start"]


def _reference(items: list, limits: DecoderLimits | None = None) -> tuple[pa.Table, dict]:
    decoder = Decoder(limits=limits)
    batches = [decoder.decode(payload, exporter, t) for exporter, payload, t in items]
    return pa.Table.from_batches(batches), decoder.stats.as_dict()


def _assert_same_as_one_by_one(items: list, limits: DecoderLimits | None = None, cuts: tuple = ()) -> pa.Table:
    """``decode_many`` over ``items`` cut into calls at ``cuts`` gives the rows and counters of
    one ``decode`` per packet. (A first call that learns the templates makes the next one start
    with them known: its packets are planned for the front end from the start.)"""
    expected, expected_stats = _reference(items, limits)
    decoder = Decoder(limits=limits)
    bounds = [0, *cuts, len(items)]
    got = pa.Table.from_batches([decoder.decode_many(items[a:b]) for a, b in itertools.pairwise(bounds)])
    assert got.num_rows == expected.num_rows
    assert got.sort_by([(k, "ascending") for k in SORT_KEYS]).equals(
        expected.sort_by([(k, "ascending") for k in SORT_KEYS])
    )
    assert decoder.stats.as_dict() == expected_stats
    assert decoder.stats.errors.get("internal", 0) == 0
    return got


def _v9_template_only(encoder: V9Encoder, template_id: int, fields: tuple) -> bytes:
    """A v9 packet holding only a template set (what many routers send between data packets)."""
    record = struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", ie, n) for ie, n in fields)
    body = struct.pack("!HH", 0, 4 + len(record)) + record
    return struct.pack("!HHIIII", 9, 1, 3_600_000, EXPORT_TIME, 0, encoder.domain) + body


def test_mixed_versions_exporters_and_garbage_in_one_call() -> None:
    """v5, v9 and IPFIX from several exporters and domains (one template id reused by all),
    template refreshes, truncated and garbage packets, shuffled into one call."""
    rnd = random.Random(5)
    items = []
    for k, exporter in enumerate(("192.0.2.1", "192.0.2.2", "2001:db8::7")):
        flows = random_flows(300, 40 + k)
        v9 = V9Encoder(256, V9_SHORT if k == 1 else None, domain=k, template_every=4).packets(flows, EXPORT_TIME)
        ipfix = IpfixEncoder(256, IPFIX_IPV6_FIELDS if k == 2 else None, domain=70_000 + k, template_every=3)
        ipfix_packets = ipfix.packets(random_flows(300, 50 + k, ipv6=k == 2), EXPORT_TIME)
        packets = v9 + ipfix_packets
        if k < 2:
            packets += encode_v5(flows, sys_uptime_ms=10**8 + k, unix_secs=EXPORT_TIME, sampling_interval=k)
        # keep each exporter's template packets first so that nothing waits for a template
        items += [(exporter, p, RECEIVE_US + 1000 * k + i) for i, p in enumerate(packets)]
    firsts = [item for item in items if item[1][1] != 5][:1]
    rest = items[1:]
    rnd.shuffle(rest)
    broken = [
        ("192.0.2.1", items[5][1][:30], RECEIVE_US),  # truncated among fast ones
        ("192.0.2.2", items[-1][1][:-7], RECEIVE_US),  # a v5 packet shorter than its count says
        ("192.0.2.1", b"\x00\x09\x00", RECEIVE_US),  # shorter than any header
        ("192.0.2.1", b"\x00\x07" + bytes(40), RECEIVE_US),  # unknown version
        ("not-an-address", items[3][1], RECEIVE_US),  # bad exporter
        ("192.0.2.1", b"", RECEIVE_US),
    ]
    mixed = firsts + rest
    for item in broken:
        mixed.insert(rnd.randrange(len(mixed)), item)
    got = _assert_same_as_one_by_one(mixed)
    _assert_same_as_one_by_one(mixed, cuts=(len(mixed) // 3,))
    assert set(column(got, "flow_version")) == {5, 9, 10}
    assert got.num_rows > 2000


def test_template_change_in_the_middle_of_a_call() -> None:
    """Packets after a redefinition decode with the new template, packets before with the old."""
    old = V9Encoder(256, domain=3, template_every=1000)
    new = V9Encoder(256, V9_SHORT, domain=3, template_every=1000)
    before = old.packets(random_flows(200, 60), EXPORT_TIME)
    change = _v9_template_only(new, 256, V9_SHORT)
    new.packets(random_flows(1, 61), EXPORT_TIME)  # consume the encoder's first (template) packet
    after = new.packets(random_flows(200, 62), EXPORT_TIME)
    items = [("192.0.2.9", p, RECEIVE_US + i) for i, p in enumerate([*before, change, *after])]
    got = _assert_same_as_one_by_one(items, cuts=(1,))  # the old template known when the call starts
    decoder = Decoder()
    decoder.decode_many(items)
    assert decoder.stats.events["template_changed"] == 1
    assert got.num_rows == 400


def test_withdrawal_expiry_and_relearning_within_one_call() -> None:
    """An IPFIX withdrawal holds the data after it; the template coming back releases it; an
    expired template (receive time jumps) holds data too. All within one call."""
    enc = IpfixEncoder(300, domain=9, template_every=1000)
    first = enc.packets(random_flows(100, 70), EXPORT_TIME)
    withdraw = enc.withdrawal_packet(EXPORT_TIME)
    held = enc.packets(random_flows(100, 71), EXPORT_TIME)
    enc.force_template()
    again = enc.packets(random_flows(100, 72), EXPORT_TIME)
    late = enc.packets(random_flows(60, 73), EXPORT_TIME)
    timeline = [*first, withdraw, *held, *again]
    items = [("192.0.2.3", p, RECEIVE_US + i) for i, p in enumerate(timeline)]
    items += [("192.0.2.3", p, RECEIVE_US + 120_000_000) for p in late]  # after the 60 s timeout
    limits = DecoderLimits(template_timeout_s=60)
    _assert_same_as_one_by_one(items, limits)
    _assert_same_as_one_by_one(items, limits, cuts=(1, len(first) + 3))
    decoder = Decoder(limits=limits)
    decoder.decode_many(items)
    assert decoder.stats.events["template_withdrawn"] == 1
    assert decoder.stats.events["template_expired"] == 1
    assert decoder.stats.events["pending_released"] == len(held)
    assert decoder.stats.pending == len(late)


def test_more_template_changes_than_replans_in_one_call() -> None:
    """Past ``MAX_REPLANS`` changes the rest of the call takes the per-packet path: same result."""
    items = []
    for k in range(MAX_REPLANS + 10):
        fields = V9_SHORT if k % 2 else V9Encoder.default_fields
        enc = V9Encoder(256, fields, domain=1, template_every=1000)
        items += [("192.0.2.4", p, RECEIVE_US + k) for p in enc.packets(random_flows(70, 80 + k), EXPORT_TIME)]
    _assert_same_as_one_by_one(items)
    _assert_same_as_one_by_one(items, cuts=(3,))


def test_refreshes_riding_with_data_keep_templates_alive() -> None:
    """Receive times 40 s apart, timeout 100 s: only the template resent with data every other
    packet keeps the template alive (a packet without it would find it expired after 3)."""
    enc = V9Encoder(256, domain=2, template_every=2)
    packets = enc.packets(random_flows(900, 90), EXPORT_TIME)
    items = [("192.0.2.5", p, RECEIVE_US + 40_000_000 * i) for i, p in enumerate(packets)]
    limits = DecoderLimits(template_timeout_s=100)
    got = _assert_same_as_one_by_one(items, limits, cuts=(1,))
    assert got.num_rows == 900
    decoder = Decoder(limits=limits)
    decoder.decode_many(items[:1])
    decoder.decode_many(items[1:])
    assert dict(decoder.stats.events) == {"template_learned": 1}  # never expired, never held


def test_refreshes_back_and_forth_in_time_alone_or_with_data() -> None:
    """Receive times going back and forth around the timeout, refreshes alone or with data."""
    enc = V9Encoder(256, domain=2, template_every=3)
    packets = enc.packets(random_flows(600, 91), EXPORT_TIME)
    refresh = _v9_template_only(enc, 256, tuple(enc.fields))
    times = [0, 50, 120, 30, 200, 10, 260, 400, 330, 500]  # seconds; timeout 100 s
    items = []
    for i, p in enumerate(packets):
        items.append(("192.0.2.5", p, RECEIVE_US + times[i % len(times)] * 1_000_000))
        if i % 4 == 1:
            items.append(("192.0.2.5", refresh, RECEIVE_US + times[(i + 3) % len(times)] * 1_000_000))
    limits = DecoderLimits(template_timeout_s=100)
    _assert_same_as_one_by_one(items, limits)
    _assert_same_as_one_by_one(items, limits, cuts=(1, 5))


@pytest.mark.parametrize("cuts", [(), (1,), (2, 9, 10, 11)])
def test_split_into_calls_and_non_bytes_payloads(cuts: tuple) -> None:
    """bytearray and memoryview payloads, and 16-byte exporters, give the same as bytes."""
    flows = random_flows(400, 95)
    packets = V9Encoder(256, domain=4, template_every=5).packets(flows, EXPORT_TIME)
    packets += encode_v5(flows, sys_uptime_ms=5_000, unix_secs=EXPORT_TIME)
    exporter = b"\x00" * 10 + b"\xff\xff" + bytes([192, 0, 2, 6])
    items = [(exporter, p, RECEIVE_US + i) for i, p in enumerate(packets)]
    _assert_same_as_one_by_one(items, cuts=cuts)
    converted = [(e, bytearray(p) if i % 2 else memoryview(p), t) for i, (e, p, t) in enumerate(items)]
    assert Decoder().decode_many(converted).equals(Decoder().decode_many(items))


def test_records_keep_packet_order_within_a_template() -> None:
    """Packets of one template, fast or not (template + data), come out in packet order."""
    flows = random_flows(500, 97)
    packets = V9Encoder(256, domain=5, template_every=3).packets(flows, EXPORT_TIME)
    batch = Decoder().decode_many([("192.0.2.8", p, RECEIVE_US) for p in packets])
    assert column(batch, "bytes") == [int(b) & 0xFFFFFFFF for b in flows["bytes"]]
    assert (np.diff(batch.column("receive_time").cast(pa.int64()).to_numpy()) >= 0).all()
