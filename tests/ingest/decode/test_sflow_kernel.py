"""The sFlow kernel (``sflow_kernel.py``) against the numpy walk it stands in for (``sflow.py``).

Every case decodes the same datagrams twice: as the decoder does (the kernel first) and with the
kernel switched off (the numpy walk alone); flows, counts and interface counters must be equal.
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from ingest.decode import Decoder, sflow_kernel
from ingest.tools import encode_sflow as sf
from ingest.tools.fuzz import mutate
from tests.ingest.decode.helpers import EXPORTER, RECEIVE_US, random_flows

ARP = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28)


def _common(i: int) -> bytes:
    """A common sampled frame: IPv4 or IPv6, TCP, UDP or ICMP, with a VLAN tag or without."""
    v6 = i % 3 == 0
    src, dst = (f"2001:db8::{i + 1:x}", f"2001:db8::2:{i:x}") if v6 else (f"10.7.{i % 250}.1", f"10.8.{i % 250}.2")
    if i % 4 == 3:
        packet = sf.icmp_frame(src, dst, 8 if not v6 else 128, i % 3)
    else:
        packet = sf.frame(src, dst, (6, 17, 132)[i % 3], 1000 + i, 443 + i, 40 + 7 * i, i % 64)
    return sf.vlan(packet, i % 4000) if i % 2 else packet


def _decode(payloads: list[bytes], kernel: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[pa.RecordBatch, Decoder]:
    with monkeypatch.context() as patch:
        if not kernel:  # the numpy walk alone, as for a call the kernel refuses
            patch.setattr(sflow_kernel, "walk", lambda *args: None)
        decoder = Decoder(default_sampling_rate=7)
        return decoder.decode_many([(EXPORTER, p, RECEIVE_US + i) for i, p in enumerate(payloads)]), decoder


def _taken(payloads: list[bytes], monkeypatch: pytest.MonkeyPatch) -> list[sflow_kernel.Walked | None]:
    """What the kernel returned in a decode of ``payloads`` (None: refused)."""
    seen: list[sflow_kernel.Walked | None] = []
    walk = sflow_kernel.walk
    with monkeypatch.context() as patch:
        patch.setattr(sflow_kernel, "walk", lambda *args: seen.append(walk(*args)) or seen[-1])
        Decoder().decode_many([(EXPORTER, p, RECEIVE_US) for p in payloads])
    return seen


def _same(payloads: list[bytes], monkeypatch: pytest.MonkeyPatch) -> pa.RecordBatch:
    """Decode both ways and check they agree; the kernel's batch."""
    ours, decoder = _decode(payloads, True, monkeypatch)
    theirs, reference = _decode(payloads, False, monkeypatch)
    assert ours.to_pylist() == theirs.to_pylist()
    assert decoder.stats.errors == reference.stats.errors and decoder.stats.events == reference.stats.events
    assert decoder.stats.packets == reference.stats.packets
    assert decoder.interface_counters.latest == reference.interface_counters.latest
    return ours


def test_common_samples_of_every_kind_match_the_numpy_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = (0x3FFFFFFF, 0x80000002, 5)  # unknown, "multiple", an ifIndex
    samples = [
        sf.flow_sample([sf.header_record(_common(i), (128, 96, 64)[i % 3])], 1 + i % 5, input_if=i % 3,
                    output_if=outputs[i % 3], expanded=i % 4 == 1)
        for i in range(240)
    ]  # fmt: skip
    payloads = [sf.datagram(("192.0.2.1", "2001:db8::9")[i % 2], samples[i : i + 6], sub_agent=i % 3)
                for i in range(0, len(samples), 6)]  # fmt: skip
    batch = _same(payloads, monkeypatch)
    assert batch.num_rows == 240
    walked = _taken(payloads, monkeypatch)
    assert len(walked) == 1 and walked[0] is not None and walked[0].n == 240 and not len(walked[0].slow)


@pytest.mark.parametrize("ipv6", [False, True])
def test_encoder_datagrams_are_taken_whole(ipv6: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = sf.SflowEncoder("192.0.2.9", 0, header_len=128).datagrams(random_flows(300, 3, ipv6=ipv6))
    batch = _same(payloads, monkeypatch)
    assert batch.num_rows == 300 and set(batch.column("sampling_rate").to_pylist()) == {7}  # rate 0: configured
    walked = _taken(payloads, monkeypatch)[0]
    assert walked is not None and walked.n == 300 and len(walked.slow) > 0  # GRE: handed back


def test_extended_records_counters_and_other_samples_keep_their_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples the kernel hands back (ARP, MPLS, tunnels, IPv6 extensions, sampled-IP records) and
    the ones it reads, with router/gateway/switch records and counter samples, in one call."""
    gateway = sf.gateway_record("198.51.100.1", 64500, 64501, 64502, [64510, 64511], [0xFDE80001])
    records = [
        [],
        [sf.switch_record(1, 2)],
        [sf.router_record("198.51.100.2", 24, 16)],
        [gateway, sf.switch_record(3, 4)],
    ]
    samples = [
        sf.flow_sample([sf.header_record(_common(i)), *records[i % 4]], 100, expanded=i % 5 == 0) for i in range(40)
    ]
    samples[7] = sf.flow_sample([sf.header_record(ARP)], 100)  # no flow: counted by the kernel
    samples[9] = sf.flow_sample([sf.header_record(sf.vlan(ARP, 5))], 100)
    ipv4 = sf.ipv4_record("198.51.100.7", "198.51.100.8", 900, 17, 53, 5353)
    samples[17] = sf.flow_sample([sf.header_record(ARP), ipv4], 100)  # handed back: a flow of its IP record
    samples[11] = sf.counter_sample([sf.interface_counters(11, {"in_octets": 5})])
    samples[13] = sf.counter_sample([sf.interface_counters(11, {"in_octets": 9})], expanded=True)
    payloads = [sf.datagram("192.0.2.1", samples[i : i + 5]) for i in range(0, 40, 5)] + sf.example_datagrams()
    batch = _same(payloads, monkeypatch)
    walked = _taken(payloads, monkeypatch)[0]
    assert walked is not None and len(walked.slow) > 5 and len(walked.counter) == 4 and len(walked.extended) > 10
    assert walked.non_ip == 2 and batch.num_rows <= walked.n  # a row per flow sample but those
    assert "198.51.100.7" in {str(ipaddress.ip_address(a).ipv4_mapped) for a in batch.column("src_addr").to_pylist()}


def _refused() -> dict[str, bytes]:
    good = sf.flow_sample([sf.header_record(_common(0))], 10)
    whole = sf.datagram("192.0.2.1", [good, good])
    misaligned = whole[:32] + struct.pack("!I", len(good) - 8 + 2) + whole[36:]
    extended = sf.flow_sample([sf.header_record(_common(0)), sf.switch_record(1, 2)], 10)
    cut_extended = extended[:4] + struct.pack("!I", len(extended) - 12) + extended[8:-4]
    return {
        "cut sample": whole[:-10],
        "cut header": whole[:20],
        "bad agent type": whole[:4] + struct.pack("!I", 3) + whole[8:],
        "misaligned sample": misaligned,
        "more samples announced": whole[:24] + struct.pack("!I", 3) + whole[28:],
        "short flow sample": sf.datagram("192.0.2.1", [struct.pack("!II", 1, 16) + bytes(16)]),
        "cut extended record": sf.datagram("192.0.2.1", [cut_extended]),
    }


@pytest.mark.parametrize("case", list(_refused()))
def test_malformed_calls_are_refused_and_the_numpy_walk_counts_them(case: str, monkeypatch) -> None:
    good = sf.datagram("192.0.2.1", [sf.flow_sample([sf.header_record(_common(i))], 10) for i in range(3)])
    payloads = [good, _refused()[case], good]
    assert _taken(payloads, monkeypatch) == [None]
    _same(payloads, monkeypatch)


def test_a_first_record_past_its_sample_is_handed_back(monkeypatch: pytest.MonkeyPatch) -> None:
    good = sf.flow_sample([sf.header_record(_common(0))], 10)
    long_record = good[: 8 + 32] + struct.pack("!II", 1, 5000) + good[48:]
    payloads = [sf.datagram("192.0.2.1", [good, long_record, good])]
    walked = _taken(payloads, monkeypatch)[0]
    assert walked is not None and walked.n == 3 and walked.slow[:, 4].tolist() == [1]
    _same(payloads, monkeypatch)


def _mutated(n: int, seed: int) -> list[bytes]:
    """sFlow datagrams (common samples, extended records, counters, every other kind), mutated."""
    rnd = random.Random(seed)
    seeds = sf.example_datagrams() + sf.SflowEncoder("192.0.2.9", 10, gateway=True).datagrams(random_flows(40, 2))
    seeds += sf.SflowEncoder("2001:db8::1", 10).datagrams(random_flows(40, 4, ipv6=True))
    return [mutate(rnd.choice(seeds), rnd.choice(seeds), rnd) if rnd.random() < 0.9 else rnd.choice(seeds)
            for _ in range(n)]  # fmt: skip


def test_mutated_datagrams_one_by_one_match_the_numpy_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A differential fuzz: each datagram is its own call, so the kernel takes every one whose
    structure holds (mutated fields, frames and records inside it), and refuses the rest."""
    taken = 0
    for payload in _mutated(1500, 5):
        if payload[:4] != b"\x00\x00\x00\x05":
            continue
        _same([payload], monkeypatch)
        taken += _taken([payload], monkeypatch) != [None]
    assert taken > 300


BOUNDS = """
import sys
import numpy as np
from ingest.decode import sflow_kernel
from tests.ingest.decode.test_sflow_kernel import _mutated

for payload in _mutated(4000, 8):
    for cut in {len(payload), len(payload) // 2, max(len(payload) - 5, 0)}:
        buf = np.frombuffer(payload[:cut], np.uint8)  # exactly the datagram: no padding to read into
        sflow_kernel.walk(buf, np.zeros(1, np.int64), np.array([cut], np.int64), np.zeros(1, np.int64))
print("ok")
"""


def test_the_kernel_reads_inside_its_datagrams_under_numba_bounds_checks(tmp_path) -> None:
    """Compiled with ``NUMBA_BOUNDSCHECK=1`` (every array access checked, IndexError past the
    end), over mutated and cut datagrams lying alone in an unpadded buffer: no read leaves them."""
    env = os.environ | {"NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", BOUNDS], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_calls_the_kernel_cannot_use_take_the_numpy_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big-endian machine (addresses are written as native words) never enters the kernel."""
    monkeypatch.setattr(sflow_kernel, "USABLE", False)
    payload = sf.datagram("192.0.2.1", [sf.flow_sample([sf.header_record(_common(1))], 10)])
    one = np.zeros(1, np.int64)
    assert sflow_kernel.walk(np.frombuffer(payload, np.uint8), one, np.array([len(payload)]), one) is None
    batch, _ = _decode([payload], True, monkeypatch)
    assert batch.num_rows == 1
