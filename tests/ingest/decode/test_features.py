"""Protocol features: uptime wraparound, biflows, packet sections, sampling, NSEL, field encodings."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ingest.decode import Decoder
from ingest.tools.capture import ethernet_frame
from ingest.tools.encode import VARLEN, IpfixEncoder, V9Encoder, encode_v5
from tests.ingest.decode.helpers import EXPORT_TIME, EXPORTER, RECEIVE_US, addresses, column, random_flows, times_us

DAY_MS = 86_400_000


@pytest.mark.parametrize("uptime_days", [1, 49, 50, 120, 400])
def test_v9_uptime_wraparound(uptime_days: int) -> None:
    """Exporters up longer than 2^32 ms (49.7 days) wrap sysUptime; flow times must not jump."""
    flows = random_flows(200, uptime_days)
    boot = EXPORT_TIME * 1000 - uptime_days * DAY_MS
    encoder = V9Encoder(256, boot_unix_ms=boot)
    batch = Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in encoder.packets(flows, EXPORT_TIME)])
    assert (times_us(batch, "flow_start") == flows["flow_start"]).all()
    assert (times_us(batch, "flow_end") == flows["flow_end"]).all()


def test_v9_wrap_between_flow_and_export() -> None:
    """First switched just before the 2^32 wrap, header sysUptime just after it."""
    export_ms = EXPORT_TIME * 1000
    boot = export_ms - (1 << 32) - 5_000  # sysUptime at export = 5 s after the wrap
    flows = random_flows(20, 3)
    flows["flow_start"] = np.full(20, (export_ms - 10_000) * 1000)  # 5 s before the wrap
    flows["flow_end"] = np.full(20, (export_ms - 1_000) * 1000)  # after it
    packets = V9Encoder(256, boot_unix_ms=boot).packets(flows, EXPORT_TIME)
    batch = Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    assert (times_us(batch, "flow_start") == flows["flow_start"]).all()
    assert (times_us(batch, "flow_end") == flows["flow_end"]).all()


def test_v5_wraparound_and_header_sampling() -> None:
    flows = random_flows(60, 4)
    packets = encode_v5(flows, sys_uptime_ms=(120 * DAY_MS) % (1 << 32), unix_secs=EXPORT_TIME, sampling_interval=100)
    batch = Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    assert (times_us(batch, "flow_end") == flows["flow_end"]).all()
    assert set(column(batch, "sampling_rate")) == {100}
    assert column(batch, "bytes") == [int(b & 0xFFFFFFFF) * 100 for b in flows["bytes"]]


def test_biflow_reverse_counters_become_their_own_record() -> None:
    """RFC 5103: PEN 29305 octet/packet counters describe the reverse direction."""
    n = 10
    flows = random_flows(n, 5)
    flows["ie29305.1"] = np.arange(n) * 10  # reverse octets; record 0 has none
    flows["ie29305.2"] = np.arange(n)
    fields = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8), (1, 8, 29305), (2, 8, 29305))
    packets = IpfixEncoder(256, fields).packets(flows, EXPORT_TIME)
    decoder = Decoder()
    batch = decoder.decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    assert batch.num_rows == n + (n - 1)
    forward, reverse = batch.slice(0, n), batch.slice(n)
    assert column(forward, "bytes") == list(flows["bytes"])
    assert column(reverse, "bytes") == list(range(10, 100, 10))
    assert addresses(reverse, "src_addr") == addresses(forward, "dst_addr")[1:]
    assert column(reverse, "src_port") == column(forward, "dst_port")[1:]
    assert decoder.stats.events["reverse_records"] == n - 1


@pytest.mark.parametrize("ipv6", [False, True])
def test_packet_section_ie315(ipv6: bool) -> None:
    """RFC 7133 dataLinkFrameSection: addresses, ports and protocol come from the frame headers."""
    if ipv6:
        src, dst = bytes(range(0x20, 0x30)), bytes(range(0x30, 0x40))
    else:
        src, dst = bytes([10, 1, 2, 3]), bytes([192, 0, 2, 77])
    frame = ethernet_frame(src, dst, 6, 43210, 443, payload_len=100, tcp_flags=0x12)
    vlan_frame = frame[:12] + b"\x81\x00\x00\x64" + frame[12:]  # one 802.1Q tag
    rows = {"ie315": [frame[:128], vlan_frame[:128]], "ie312": [len(frame), len(vlan_frame)]}
    encoder = IpfixEncoder(256, ((315, VARLEN), (312, 2)), domain=9)
    decoder = Decoder(default_sampling_rate=1000)
    batch = decoder.decode(encoder.packets(rows, EXPORT_TIME)[0], EXPORTER, RECEIVE_US)
    expected_src = str(__import__("ipaddress").ip_address(src))
    assert addresses(batch, "src_addr") == [expected_src] * 2
    assert column(batch, "src_port") == [43210, 43210] and column(batch, "dst_port") == [443, 443]
    assert column(batch, "protocol") == [6, 6] and column(batch, "tcp_flags") == [0x12, 0x12]
    assert column(batch, "packets") == [1000, 1000]
    ip_length = len(frame) - 14  # layer-3 bytes (the IP header's length), not the frame's size
    assert column(batch, "bytes") == [ip_length * 1000, ip_length * 1000]


def test_sampling_from_options_sampler_id() -> None:
    flows = random_flows(20, 6)
    flows["ie48"] = np.array([1] * 10 + [2] * 10)
    encoder = V9Encoder(300, (*V9Encoder.default_fields, (48, 1)), domain=5)
    options = encoder.options_packet(
        301, [(1, 4)], [(48, 1), (34, 4)], {"ie1": [0, 0], "ie48": [1, 2], "ie34": [10, 500]}, EXPORT_TIME
    )
    decoder = Decoder()
    batch = decoder.decode_many(
        [(EXPORTER, options, RECEIVE_US)] + [(EXPORTER, p, RECEIVE_US) for p in encoder.packets(flows, EXPORT_TIME)]
    )
    assert column(batch, "sampling_rate") == [10] * 10 + [500] * 10
    assert column(batch, "packets") == [
        int(p & 0xFFFFFFFF) * r for p, r in zip(flows["packets"], [10] * 10 + [500] * 10, strict=True)
    ]
    assert decoder.samplers  # learned per (exporter, domain, sampler id)
    other = Decoder().decode_many(
        [
            ("192.0.2.99", p, RECEIVE_US)
            for p in V9Encoder(300, (*V9Encoder.default_fields, (48, 1)), domain=5).packets(flows, EXPORT_TIME)
        ]
    )
    assert set(column(other, "sampling_rate")) == {1}  # another exporter's sampler 1 is unknown


@pytest.mark.parametrize("fields,values,rate", [
    (((34, 4),), {"ie34": 64}, 64),
    (((50, 4),), {"ie50": 128}, 128),
    (((305, 4), (306, 4)), {"ie305": 1, "ie306": 99}, 100),
])  # fmt: skip
def test_sampling_inside_records(fields, values, rate) -> None:
    flows = random_flows(5, 7) | {k: np.full(5, v) for k, v in values.items()}
    encoder = IpfixEncoder(256, (*IpfixEncoder.default_fields, *fields))
    batch = Decoder().decode(encoder.packets(flows, EXPORT_TIME)[0], EXPORTER, RECEIVE_US)
    assert set(column(batch, "sampling_rate")) == {rate}
    assert column(batch, "bytes") == [int(b) * rate for b in flows["bytes"]]


def test_sampling_defaults_per_subnet() -> None:
    flows = random_flows(3, 8)
    packet = encode_v5(flows, sys_uptime_ms=10**7, unix_secs=EXPORT_TIME)[0]
    decoder = Decoder(default_sampling_rate=2, sampling_overrides={"10.0.0.0/8": 100, "10.1.0.0/16": 7})
    rates = [decoder.decode(packet, exporter, RECEIVE_US).column("sampling_rate")[0].as_py()
             for exporter in ("10.1.2.3", "10.9.9.9", "192.0.2.1")]  # fmt: skip
    assert rates == [7, 100, 2]


def test_nsel_create_events_do_not_double_count() -> None:
    """ASA: create (1) without traffic dropped; teardown (2) counts initiator and responder bytes."""
    flows = random_flows(3, 9)
    flows["ie233"] = np.array([1, 2, 3])
    flows["ie231"] = np.array([0, 5000, 0])
    flows["ie232"] = np.array([0, 70000, 0])
    flows["ie298"] = np.array([0, 5, 1])
    flows["ie299"] = np.array([0, 50, 0])
    fields = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (233, 1), (231, 8), (232, 8), (298, 8), (299, 8))
    decoder = Decoder()
    batch = decoder.decode(IpfixEncoder(256, fields).packets(flows, EXPORT_TIME)[0], EXPORTER, RECEIVE_US)
    assert column(batch, "bytes") == [5000, 0, 70000]  # teardown, denied, teardown's responder side
    assert column(batch, "packets") == [5, 1, 50]
    assert addresses(batch, "src_addr")[2] == addresses(batch, "dst_addr")[0]
    assert decoder.stats.events["nsel_create_skipped"] == 1


def test_varlen_both_length_encodings_and_enterprise_fields() -> None:
    short, long_ = b"x" * 10, b"y" * 300  # 1-byte and 3-byte (255 + uint16) length forms
    flows = random_flows(2, 10) | {"ie82": [short, long_], "ie9.12235": [b"host", b"h" * 400]}
    fields = ((8, 4), (82, VARLEN), (12, 4), (1, 8), (12235, VARLEN, 9), (100, 4, 12345), (2, 8))
    batch = Decoder().decode(
        IpfixEncoder(256, fields, max_payload=9000).packets(flows, EXPORT_TIME)[0], EXPORTER, RECEIVE_US
    )
    assert column(batch, "bytes") == list(flows["bytes"])
    assert column(batch, "packets") == list(flows["packets"])
    assert [bytes(a) for a in flows["dst_addr"]] == column(batch, "dst_addr")


def test_v9_length_65535_field_and_zero_length_fields() -> None:
    flows = random_flows(4, 11) | {"ie82": [b"ge-0/0/0", b"", b"a" * 20, b"b"]}
    fields = ((8, 4), (12, 4), (95, 0), (82, VARLEN), (1, 4), (2, 4), (5, 0))
    batch = Decoder().decode(V9Encoder(256, fields).packets(flows, EXPORT_TIME)[0], EXPORTER, RECEIVE_US)
    assert column(batch, "bytes") == [int(b & 0xFFFFFFFF) for b in flows["bytes"]]


def test_several_sets_and_padding_in_one_packet() -> None:
    a, b = random_flows(3, 12), random_flows(4, 13)
    ea, eb = (
        IpfixEncoder(256, domain=1, pad=True),
        IpfixEncoder(257, ((8, 4), (12, 4), (1, 2), (2, 1)), domain=1, pad=True),
    )
    pa_, pb = ea.packets(a, EXPORT_TIME)[0], eb.packets(b, EXPORT_TIME)[0]
    body = pa_[16:] + pb[16:]  # template+data of both encoders, each set padded to 4 bytes
    packet = struct.pack("!HHIII", 10, 16 + len(body), EXPORT_TIME, 0, 1) + body
    batch = Decoder().decode(packet, EXPORTER, RECEIVE_US)
    assert sorted(column(batch, "bytes")) == sorted(list(a["bytes"]) + [int(x) & 0xFFFF for x in b["bytes"]])


@pytest.mark.parametrize("payload,reason", [
    (b"", "truncated"),
    (b"\x00\x05\x00\x01" + b"\x00" * 20, "truncated"),   # v5 claiming a record it lacks
    (b"\x00\x07" + b"\x00" * 40, "unknown_version"),
    (b"\x00\x09\x00\x01" + b"\x00" * 16 + b"\x01\x00\x00\x02", "malformed"),  # set length 2
    (b"\x00\x09\x00\x01" + b"\x00" * 16 + b"\x01\x00\x00\x40", "truncated"),  # set beyond the packet
    (b"\x00\x0a\x00\x40" + b"\x00" * 12, "truncated"),  # IPFIX length beyond the datagram
    (b"\x00\x09\x00\x01" + b"\x00" * 16 + b"\x00\x00\x00\x08\x00\x05\x00\x00", "malformed"),  # template id 5
])  # fmt: skip
def test_invalid_packets_yield_nothing_and_count(payload: bytes, reason: str) -> None:
    decoder = Decoder()
    assert decoder.decode(payload, EXPORTER, RECEIVE_US).num_rows == 0
    assert decoder.stats.errors[reason] == 1, decoder.stats.errors


def test_malformed_packet_contributes_no_records_even_if_its_first_set_is_good() -> None:
    good = V9Encoder(256).packets(random_flows(5, 14), EXPORT_TIME)[0]
    broken = good[:4] + good[4:] + b"\x01\x00\x00\x03"  # a trailing set with length 3
    decoder = Decoder()
    assert decoder.decode(broken, EXPORTER, RECEIVE_US).num_rows == 0
    assert decoder.stats.errors["malformed"] == 1


def test_reduced_size_encoding_of_odd_widths_including_sampling() -> None:
    """RFC 7011 §6.2: counters may be sent in fewer bytes (here 3, 5, 6 and 7), rates too."""
    flows = random_flows(6, 15) | {"ie34": np.full(6, 70_000)}
    flows["bytes"] %= 1 << 40
    flows["packets"] %= 1 << 24
    fields = ((8, 4), (12, 4), (1, 5), (2, 3), (85, 6), (86, 7), (34, 3))
    batch = Decoder().decode(IpfixEncoder(256, fields).packets(flows, EXPORT_TIME)[0], EXPORTER, RECEIVE_US)
    assert column(batch, "sampling_rate") == [70_000] * 6
    assert column(batch, "bytes") == [int(b) * 70_000 for b in flows["bytes"]]
    assert column(batch, "packets") == [int(p) * 70_000 for p in flows["packets"]]
