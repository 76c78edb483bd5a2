"""Template state: keys, persistence, data before template, withdrawal, expiry, caps."""

from __future__ import annotations

import pytest

from ingest.decode import Decoder, DecoderLimits
from ingest.tools.encode import IPFIX_IPV6_FIELDS, IpfixEncoder, V9Encoder
from tests.ingest.decode.helpers import EXPORT_TIME, EXPORTER, RECEIVE_US, column, random_flows


def test_data_before_template_is_held_then_decoded() -> None:
    flows = random_flows(200, 1)
    packets = V9Encoder(256, template_every=1000).packets(flows, EXPORT_TIME)
    dec_with_template = Decoder()
    expected = dec_with_template.decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    later = V9Encoder(256, template_every=1000)
    later_packets = later.packets(flows, EXPORT_TIME)  # packet 0 carries the template
    decoder = Decoder()
    held = decoder.decode_many([(EXPORTER, p, RECEIVE_US) for p in later_packets[1:]])
    assert held.num_rows == 0
    assert decoder.stats.pending == len(later_packets) - 1
    released = decoder.decode(later_packets[0], EXPORTER, RECEIVE_US)
    assert released.num_rows == expected.num_rows
    assert sorted(column(released, "bytes")) == sorted(column(expected, "bytes"))
    assert decoder.stats.pending == 0 and decoder.stats.pending_bytes == 0
    assert decoder.stats.events["pending_released"] == len(later_packets) - 1


def test_pending_buffer_is_bounded() -> None:
    flows = random_flows(3000, 2)
    packets = V9Encoder(256, template_every=10**6).packets(flows, EXPORT_TIME)[1:]
    limits = DecoderLimits(max_pending_bytes=8_000, max_pending_sets=100)
    decoder = Decoder(limits=limits)
    decoder.decode_many([(EXPORTER, p, RECEIVE_US) for p in packets])
    assert decoder.stats.pending_bytes <= 8_000
    assert decoder.stats.errors["no_template_dropped"] == len(packets) - decoder.stats.pending


def test_templates_survive_restart(tmp_path) -> None:
    flows = random_flows(100, 3)
    encoder = IpfixEncoder(300, IPFIX_IPV6_FIELDS, domain=4, template_every=1000)
    packets = encoder.packets(random_flows(100, 3, ipv6=True), EXPORT_TIME)
    first = Decoder()
    first.decode(packets[0], EXPORTER, RECEIVE_US)
    first.save_state(tmp_path / "state.json")
    restarted = Decoder()
    assert restarted.load_state(tmp_path / "state.json") == 1
    batch = restarted.decode_many([(EXPORTER, p, RECEIVE_US) for p in packets[1:]])
    assert batch.num_rows == 100 - first.stats.records
    assert restarted.stats.pending == 0
    del flows


def test_same_template_id_from_two_exporters_and_domains_never_collide() -> None:
    flows4 = random_flows(30, 4)
    flows6 = random_flows(30, 5, ipv6=True)
    v4 = IpfixEncoder(256, domain=1, max_payload=9000).packets(flows4, EXPORT_TIME)
    v6 = IpfixEncoder(256, IPFIX_IPV6_FIELDS, domain=1, max_payload=9000).packets(flows6, EXPORT_TIME)
    v6_other_domain = IpfixEncoder(256, IPFIX_IPV6_FIELDS, domain=2, max_payload=9000).packets(flows6, EXPORT_TIME)
    decoder = Decoder()
    items = [
        ("192.0.2.1", v4[0], RECEIVE_US),
        ("192.0.2.2", v6[0], RECEIVE_US),
        ("192.0.2.1", v6_other_domain[0], RECEIVE_US),
    ]
    batch = decoder.decode_many(items)
    assert batch.num_rows == 90
    assert sorted(column(batch, "bytes")) == sorted(list(flows4["bytes"]) + 2 * list(flows6["bytes"]))
    assert len(decoder.templates) == 3


def test_ipfix_withdrawal_and_changed_template() -> None:
    flows = random_flows(10, 6)
    encoder = IpfixEncoder(256, domain=1, template_every=1000)
    packets = encoder.packets(flows, EXPORT_TIME)
    decoder = Decoder()
    assert decoder.decode(packets[0], EXPORTER, RECEIVE_US).num_rows == 10
    decoder.decode(encoder.withdrawal_packet(EXPORT_TIME), EXPORTER, RECEIVE_US)
    assert decoder.stats.events["template_withdrawn"] == 1 and not decoder.templates
    again = encoder.packets(flows, EXPORT_TIME)  # no template in these: held, not decoded with a stale one
    assert decoder.decode(again[0], EXPORTER, RECEIVE_US).num_rows == 0
    changed = IpfixEncoder(256, IPFIX_IPV6_FIELDS, domain=1).packets(random_flows(10, 7, ipv6=True), EXPORT_TIME)
    batch = decoder.decode(changed[0], EXPORTER, RECEIVE_US)
    assert decoder.stats.events["template_learned"] == 2
    assert batch.num_rows >= 10


def test_template_expiry() -> None:
    flows = random_flows(10, 8)
    encoder = V9Encoder(256, template_every=1000)
    first, second = encoder.packets(flows, EXPORT_TIME), encoder.packets(flows, EXPORT_TIME)
    decoder = Decoder(limits=DecoderLimits(template_timeout_s=60))
    assert decoder.decode(first[0], EXPORTER, RECEIVE_US).num_rows == 10
    assert decoder.decode(second[0], EXPORTER, RECEIVE_US + 61_000_000).num_rows == 0
    assert decoder.stats.events["template_expired"] == 1
    assert decoder.stats.pending == 1


def test_template_cap_counts_refusals() -> None:
    decoder = Decoder(limits=DecoderLimits(max_templates=3))
    flows = random_flows(5, 9)
    for template_id in range(256, 262):
        decoder.decode(V9Encoder(template_id).packets(flows, EXPORT_TIME)[0], EXPORTER, RECEIVE_US)
    assert len(decoder.templates) == 3
    assert decoder.stats.errors["template_limit"] == 3


@pytest.mark.parametrize("bad_exporter", ["not-an-address", b"\x01\x02"])
def test_bad_exporter_is_counted(bad_exporter) -> None:
    packets = V9Encoder().packets(random_flows(3, 1), EXPORT_TIME)
    decoder = Decoder()
    assert decoder.decode(packets[0], bad_exporter, RECEIVE_US).num_rows == 0
    assert decoder.stats.errors["bad_exporter"] == 1
