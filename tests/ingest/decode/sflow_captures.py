"""The sFlow and IPFIX packet-section captures under ``testdata/``, built from ``ingest.encode_sflow``.

``python -m tests.ingest.decode.sflow_captures`` writes them again; a test checks that the files
in git are what this module builds, so the captures and their recipe cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from ingest.capture import ethernet_frame, write_pcap
from ingest.encode import VARLEN, IpfixEncoder
from ingest.encode_sflow import (
    counter_sample,
    datagram,
    flow_sample,
    frame,
    gateway_record,
    gre,
    header_record,
    icmp_frame,
    interface_counters,
    ip_packet,
    ipv4_record,
    ipv6_record,
    mpls,
    router_record,
    switch_record,
    vlan,
    vxlan,
)

TESTDATA = Path(__file__).parent / "testdata"
SFLOW_PCAP = TESTDATA / "sflow_kinds.pcap"
SECTIONS_PCAP = TESTDATA / "ipfix_sections.pcap"
START_US = 1_764_000_000_000_000  # the captures' first timestamp (fixed: the files are in git)
COLLECTOR = bytes([192, 0, 2, 250])


def _ipv6_with_extensions() -> bytes:
    """Ethernet + IPv6 + hop-by-hop + fragment (first fragment) + TCP."""
    eth = frame("2001:db8::10", "2001:db8::20", 6, 33000, 22, 64, 0x10)
    ip, tcp = eth[14:54], eth[54:]
    hop_by_hop = struct.pack("!BB6s", 44, 0, bytes(6))
    fragment = struct.pack("!BBHI", 6, 0, 0x0001, 7)  # offset 0, more fragments
    payload_length = len(hop_by_hop) + len(fragment) + len(tcp)
    ip = ip[:4] + struct.pack("!HB", payload_length, 0) + ip[7:]
    return eth[:14] + ip + hop_by_hop + fragment + tcp


def flow_samples() -> list[bytes]:
    """Flow samples of every kind the decoder reads (one flow each)."""
    tcp4 = frame("10.0.0.1", "10.0.0.2", 6, 43210, 443, 1000, 0x18)
    udp6 = frame("2001:db8::1", "2001:db8::2", 17, 5353, 53, 300)
    # whole packets inside 128 bytes: tshark dissects no tunnel payload cut short
    vxlan_frame = vxlan("192.168.1.1", "192.168.1.2", frame("10.4.0.1", "10.4.0.2", 6, 3333, 9000, 0))
    gre_frame = gre("192.168.2.1", "192.168.2.2", ip_packet(frame("10.5.0.1", "10.5.0.2", 17, 4444, 161, 20)))
    evpn = mpls(frame("10.20.0.1", "10.20.0.2", 6, 1111, 8443, 200), [3000, 4000], control_word=True)
    return [
        flow_sample([header_record(tcp4), switch_record(10, 20)], 1000, 5000, 3, 4),
        flow_sample([header_record(udp6, 96)], 2048, 9000, 5, 6, seq=2, expanded=True),
        flow_sample([header_record(vlan(frame("10.1.0.1", "10.1.0.2", 17, 40000, 4789 + 1, 50), 100, 200))], 512),
        flow_sample([header_record(mpls(ip_packet(frame("10.2.0.1", "10.2.0.2", 6, 2222, 80, 500)), [16, 17]))], 100),
        flow_sample([header_record(evpn)], 100, input_if=7, output_if=0x3FFFFFFF),
        flow_sample([header_record(_ipv6_with_extensions())], 10),
        flow_sample([header_record(icmp_frame("10.3.0.1", "10.3.0.2", 8, 0))], 10),
        flow_sample([header_record(icmp_frame("2001:db8::3", "2001:db8::4", 128, 0))], 10),
        flow_sample([header_record(vxlan_frame)], 64),
        flow_sample([header_record(gre_frame)], 64),
        flow_sample([ipv4_record("198.51.100.1", "198.51.100.2", 1500, 6, 50000, 25, 0x02),
                     router_record("198.51.100.254", 24, 16),
                     gateway_record("198.51.100.253", 64500, 64501, 64502, [64510, 64511, 64512], [0xFDE80001])], 400),
        flow_sample([ipv6_record("2001:db8::5", "2001:db8::6", 700, 17, 123, 123)], 400, expanded=True),
        # cut inside the TCP header: truncated (no flags), still a flow
        flow_sample([header_record(frame("10.0.9.1", "10.0.9.2", 6, 4321, 80, 1000), 40)], 1000),
    ]  # fmt: skip


def sflow_datagrams() -> list[bytes]:
    samples = flow_samples()
    counters = [
        counter_sample([interface_counters(3, {"in_octets": 123456, "out_octets": 654321, "in_errors": 2})]),
        counter_sample([interface_counters(4, {"in_unicast_packets": 99})], source=4, expanded=True),
    ]
    return [
        datagram("192.0.2.1", samples[:5], sub_agent=1, seq=1),
        datagram("192.0.2.1", samples[5:9] + counters[:1], sub_agent=1, seq=2),
        datagram("2001:db8::99", samples[9:] + counters[1:], sub_agent=7, seq=1),
    ]


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


def _udp_frames(payloads: list[bytes], sources: list[bytes], port: int) -> list[tuple[int, bytes]]:
    return [
        (START_US + i * 1000, ethernet_frame(src, COLLECTOR, 17, 50000 + i, port, 0, payload=p))
        for i, (p, src) in enumerate(zip(payloads, sources, strict=True))
    ]


def write(directory: Path = TESTDATA) -> tuple[Path, Path]:
    sflow_path, sections_path = directory / SFLOW_PCAP.name, directory / SECTIONS_PCAP.name
    agents = [ipaddress.ip_address("192.0.2.1").packed] * 3  # the UDP source (the agent address is inside)
    write_pcap(sflow_path, _udp_frames(sflow_datagrams(), agents, 6343))
    packets = section_packets()
    write_pcap(sections_path, _udp_frames(packets, [bytes([192, 0, 2, 2])] * len(packets), 4739))
    return sflow_path, sections_path


if __name__ == "__main__":
    for path in write():
        print(path)
