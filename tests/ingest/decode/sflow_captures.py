"""The sFlow and IPFIX packet-section captures under ``testdata/``, built from ``ingest.tools.encode_sflow``.

``python -m tests.ingest.decode.sflow_captures`` writes them again; a test checks that the files
in git are what this module builds, so the captures and their recipe cannot drift apart.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ingest.tools.capture import ethernet_frame, write_pcap
from ingest.tools.encode import VARLEN, IpfixEncoder
from ingest.tools.encode_sflow import (
    AS_SEQUENCE,
    AS_SET,
    datagram,
    example_datagrams,
    flow_sample,
    frame,
    gateway_record,
    header_record,
    ip_packet,
    router_record,
    switch_record,
    vlan,
)

TESTDATA = Path(__file__).parent / "testdata"
SFLOW_PCAP = TESTDATA / "sflow_kinds.pcap"
SECTIONS_PCAP = TESTDATA / "ipfix_sections.pcap"
ROUTING_PCAP = TESTDATA / "sflow_routing.pcap"
START_US = 1_764_000_000_000_000  # the captures' first timestamp (fixed: the files are in git)
COLLECTOR = bytes([192, 0, 2, 250])


def section_packets() -> list[bytes]:
    """IPFIX with packet sections: IE 315 (+312), IE 104 and IE 313 records."""
    tcp4 = frame("10.6.0.1", "10.6.0.2", 6, 5555, 443, 600, 0x12)
    udp6 = frame("2001:db8::7", "2001:db8::8", 17, 6666, 53, 100)
    tagged = vlan(frame("10.7.0.1", "10.7.0.2", 17, 7777, 514, 90), 42)
    out = []
    encoder = IpfixEncoder(256, ((315, VARLEN), (312, 2)), domain=9)
    out += encoder.packets({"ie315": [tcp4[:128], udp6[:128], tagged[:128]],
                            "ie312": [len(tcp4), len(udp6), len(tagged)]}, 1_764_000_000)  # fmt: skip
    encoder = IpfixEncoder(257, ((104, VARLEN), (34, 4)), domain=9)
    l2 = frame("10.8.0.1", "10.8.0.2", 6, 8888, 22, 300, 0x10)
    out += encoder.packets({"ie104": [l2[:96]], "ie34": [100]}, 1_764_000_000)
    encoder = IpfixEncoder(258, ((313, VARLEN),), domain=9)
    ip4, ip6 = frame("10.9.0.1", "10.9.0.2", 6, 9999, 25, 200), frame("2001:db8::9", "2001:db8::a", 17, 1234, 123, 48)
    out += encoder.packets({"ie313": [ip_packet(ip4)[:64], ip_packet(ip6)[:64]]}, 1_764_000_000)
    return out


# Raw-packet samples with extended router/gateway records, and what each flow's routing columns
# must hold: (source address, next hop, AS path, communities, src_as, dst_as; None: NULL).
ROUTING = [
    ("10.30.0.1", "192.0.2.254", [64513, 3356, 15169], [65000 << 16 | 100, 65000 << 16 | 200], 64512, 15169),
    ("2001:db8:30::1", "2001:db8:30::fe", [64601, 6939], [65000 << 16 | 300], 64600, 6939),
    ("10.31.0.1", "192.0.2.254", [64700, 174, 65001, 65002], [], 64512, 65002),  # AS_SEQUENCE then AS_SET
    ("10.32.0.1", "192.0.2.253", [], [], 0, 65000),  # empty path: the destination is the router's AS
    ("10.33.0.1", "192.0.2.252", None, None, None, None),  # router record: next hop only
    ("10.34.0.1", None, None, None, None, None),  # no extended record
]


def routing_datagrams() -> list[bytes]:
    """Two datagrams of ``ROUTING``'s samples (compact and expanded, tagged and not)."""
    tcp = [frame(src, src.replace(".1", ".2") if "." in src else src[:-1] + "2", 6, 40000 + i, 443, 800, 0x18)
           for i, (src, *_) in enumerate(ROUTING)]  # fmt: skip
    samples = [
        flow_sample([header_record(tcp[0]), gateway_record("192.0.2.254", 65000, 64512, 64513, ROUTING[0][2],
                                                           ROUTING[0][3])], 1000),
        flow_sample([header_record(tcp[1]), gateway_record("2001:db8:30::fe", 65000, 64600, 64601, ROUTING[1][2],
                                                           ROUTING[1][3])], 1000, expanded=True),
        flow_sample([header_record(tcp[2]), switch_record(10, 20),
                     gateway_record("192.0.2.254", 65000, 64512, 64700,
                                    segments=[(AS_SEQUENCE, [64700, 174]), (AS_SET, [65001, 65002])])], 1000),
        flow_sample([header_record(tcp[3]), gateway_record("192.0.2.253", 65000, 0, 0)], 1000),
        flow_sample([header_record(tcp[4]), router_record("192.0.2.252", 24, 16)], 1000),
        flow_sample([header_record(vlan(tcp[5], 30))], 1000),
    ]  # fmt: skip
    return [datagram("192.0.2.1", samples[:3], sub_agent=2), datagram("192.0.2.1", samples[3:], sub_agent=2, seq=2)]


def _udp_frames(payloads: list[bytes], sources: list[bytes], port: int) -> list[tuple[int, bytes]]:
    return [
        (START_US + i * 1000, ethernet_frame(src, COLLECTOR, 17, 50000 + i, port, 0, payload=p))
        for i, (p, src) in enumerate(zip(payloads, sources, strict=True))
    ]


def write(directory: Path = TESTDATA) -> tuple[Path, Path, Path]:
    sflow_path, sections_path = directory / SFLOW_PCAP.name, directory / SECTIONS_PCAP.name
    agent = ipaddress.ip_address("192.0.2.1").packed  # the UDP source (the agent address is inside)
    write_pcap(sflow_path, _udp_frames(example_datagrams(), [agent] * 3, 6343))
    packets = section_packets()
    write_pcap(sections_path, _udp_frames(packets, [bytes([192, 0, 2, 2])] * len(packets), 4739))
    routing_path = directory / ROUTING_PCAP.name
    write_pcap(routing_path, _udp_frames(routing_datagrams(), [agent] * 2, 6343))
    return sflow_path, sections_path, routing_path


if __name__ == "__main__":
    for path in write():
        print(path)
