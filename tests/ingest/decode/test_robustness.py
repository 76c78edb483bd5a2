"""Bounded fuzzing (the 1M-packet run is ``python -m ingest.tools.fuzz --packets 1000000``)."""

from __future__ import annotations

import random

import pytest

from ingest.decode import Decoder, DecoderLimits
from ingest.schema import FLOW_SCHEMA
from ingest.tools.encode import encode_v5
from ingest.tools.fuzz import mutate, run, seed_packets
from tests.ingest.decode.helpers import EXPORT_TIME, random_flows


def test_fuzz_20k_mutated_packets_raise_nothing_and_respect_caps() -> None:
    result = run(20_000, seed=3)
    assert result.ok, (result.raised, result.cap_violations, result.errors.get("internal"))
    assert result.records > 0  # unmutated seeds still decode: the run exercised real paths
    assert sum(result.errors.values()) > 0  # and mutated ones were rejected and counted


def test_tight_caps_hold_under_fuzzing() -> None:
    limits = DecoderLimits(max_templates=5, max_exporters=2, max_pending_bytes=2_000, max_pending_sets=5)
    result = run(5_000, seed=4, limits=limits)
    assert result.ok, result.cap_violations


def test_every_truncation_of_every_seed_is_safe() -> None:
    """Each seed cut at every length: no exception, only whole valid records come out."""
    decoder = Decoder()
    for packet in seed_packets()[::7]:
        for cut in range(0, len(packet), 3):
            batch = decoder.decode(packet[:cut], "192.0.2.1", EXPORT_TIME * 1_000_000)
            assert batch.schema.equals(FLOW_SCHEMA)
    assert decoder.stats.errors.get("internal", 0) == 0


def test_mutations_change_packets() -> None:
    rnd = random.Random(1)
    seeds = seed_packets()
    assert sum(mutate(p, seeds[0], rnd) != p for p in seeds) > len(seeds) * 0.8


def test_encoder_refuses_ipv6_in_v5() -> None:
    with pytest.raises(ValueError, match="IPv4 only"):
        encode_v5(random_flows(2, 1, ipv6=True), sys_uptime_ms=1, unix_secs=EXPORT_TIME)


def test_seeds_include_the_recorded_captures_and_a_given_corpus(tmp_path) -> None:
    from ingest.tools.capture import read_udp
    from ingest.tools.fuzz import TESTDATA

    recorded = [d.payload for d in read_udp(TESTDATA / "softflowd_v9.pcap")]
    assert all(p in seed_packets() for p in recorded)
    (tmp_path / "one.dat").write_bytes(b"\x00\x0a payload of an external corpus")
    assert b"\x00\x0a payload of an external corpus" in seed_packets(tmp_path)
