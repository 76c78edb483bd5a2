"""The sFlow and IPFIX packet-section captures under ``testdata/``, built from ``ingest.tools.encode_sflow``.

``python -m tests.ingest.decode.sflow_captures`` writes them again; a test checks that the files
in git are what this module builds, so the captures and their recipe cannot drift apart.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ingest.tools.capture import ethernet_frame, write_pcap
from ingest.tools.encode import VARLEN, IpfixEncoder
from ingest.tools.encode_sflow import example_datagrams, frame, ip_packet, vlan

TESTDATA = Path(__file__).parent / "testdata"
SFLOW_PCAP = TESTDATA / "sflow_kinds.pcap"
SECTIONS_PCAP = TESTDATA / "ipfix_sections.pcap"
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


def _udp_frames(payloads: list[bytes], sources: list[bytes], port: int) -> list[tuple[int, bytes]]:
    return [
        (START_US + i * 1000, ethernet_frame(src, COLLECTOR, 17, 50000 + i, port, 0, payload=p))
        for i, (p, src) in enumerate(zip(payloads, sources, strict=True))
    ]


def write(directory: Path = TESTDATA) -> tuple[Path, Path]:
    sflow_path, sections_path = directory / SFLOW_PCAP.name, directory / SECTIONS_PCAP.name
    agents = [ipaddress.ip_address("192.0.2.1").packed] * 3  # the UDP source (the agent address is inside)
    write_pcap(sflow_path, _udp_frames(example_datagrams(), agents, 6343))
    packets = section_packets()
    write_pcap(sections_path, _udp_frames(packets, [bytes([192, 0, 2, 2])] * len(packets), 4739))
    return sflow_path, sections_path


if __name__ == "__main__":
    for path in write():
        print(path)
