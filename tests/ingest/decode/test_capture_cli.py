"""pcap/pcapng reading and ``flowlens decode`` (JSON lines and --table)."""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

import pytest

from ingest.decode.cli import main
from ingest.tools.capture import CaptureError, CaptureStats, ethernet_frame, read_udp, write_pcap
from ingest.tools.encode import IpfixEncoder, V9Encoder
from tests.ingest.decode.exporters import traffic
from tests.ingest.decode.helpers import EXPORT_TIME, random_flows

TESTDATA = Path(__file__).parent / "testdata"


def _udp(src: bytes, dport: int, payload: bytes) -> bytes:
    return ethernet_frame(src, bytes([198, 51, 100, 1]), 17, 50000, dport, 0, payload=payload)


def _pcapng(frames: list[tuple[int, bytes]]) -> bytes:
    """A minimal pcapng: section header, one Ethernet interface (µs), enhanced packet blocks."""
    shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    idb = struct.pack("<IIHHI", 1, 20, 1, 0, 65535) + struct.pack("<I", 20)
    out = shb + idb
    for time_us, frame in frames:
        padded = frame + b"\x00" * (-len(frame) % 4)
        length = 32 + len(padded)
        out += struct.pack("<IIIIIII", 6, length, 0, time_us >> 32, time_us & 0xFFFFFFFF, len(frame), len(frame))
        out += padded + struct.pack("<I", length)
    return out


@pytest.fixture
def capture(tmp_path) -> tuple[Path, dict]:
    """Two exporters (v9 and IPFIX) on port 2055, noise on port 53 and a TCP segment."""
    a, b = random_flows(40, 1), random_flows(30, 2)
    frames, t = [], EXPORT_TIME * 1_000_000
    for p in V9Encoder(256, domain=1).packets(a, EXPORT_TIME):
        frames.append((t, _udp(bytes([10, 0, 0, 1]), 2055, p)))
        t += 10
    for p in IpfixEncoder(256, domain=1).packets(b, EXPORT_TIME):
        frames.append((t, _udp(bytes([10, 0, 0, 2]), 2055, p)))
        t += 10
    frames.append((t, _udp(bytes([10, 0, 0, 3]), 53, b"\x12\x34" * 10)))
    frames.append((t, ethernet_frame(bytes([10, 0, 0, 4]), bytes([10, 0, 0, 5]), 6, 1, 2, 10)))
    path = tmp_path / "export.pcap"
    write_pcap(path, frames)
    return path, {"a": a, "b": b, "frames": frames}


def _json_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_read_udp_pcap_and_pcapng(capture, tmp_path) -> None:
    path, data = capture
    stats = CaptureStats()
    datagrams = list(read_udp(path, stats))
    assert stats.frames == len(data["frames"]) and stats.udp == len(datagrams) == len(data["frames"]) - 1
    ng = tmp_path / "export.pcapng"
    ng.write_bytes(_pcapng(data["frames"]))
    assert [(d.src, d.dst_port, d.payload, d.time_us) for d in read_udp(ng)] == [
        (d.src, d.dst_port, d.payload, d.time_us) for d in datagrams
    ]


def test_not_a_capture_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(b"hello world")
    with pytest.raises(CaptureError, match="not a pcap"):
        list(read_udp(path))


def test_cli_json_lines_with_port_filter(capture, capsys) -> None:
    path, data = capture
    assert main([str(path), "--port", "2055"]) == 0
    rows = _json_lines(capsys)
    assert len(rows) == 70
    by_exporter = defaultdict(list)
    for row in rows:
        by_exporter[row["exporter"]].append(row)
    assert sorted(r["bytes"] for r in by_exporter["10.0.0.1"]) == sorted(
        int(b) & 0xFFFFFFFF for b in data["a"]["bytes"]
    )
    assert sorted(r["bytes"] for r in by_exporter["10.0.0.2"]) == sorted(int(b) for b in data["b"]["bytes"])
    assert rows[0]["flow_start"].endswith("Z") and "." in rows[0]["src_addr"]


def test_cli_files_share_template_state(tmp_path, capsys) -> None:
    """Raw payload files in order: the template in the first decodes the data in the second."""
    packets = V9Encoder(256, template_every=100).packets(random_flows(60, 3), EXPORT_TIME)
    files = []
    for i, packet in enumerate(packets):
        files.append(tmp_path / f"{i}.dat")
        files[-1].write_bytes(packet)
    assert main([str(f) for f in files]) == 0
    assert len(_json_lines(capsys)) == 60
    assert main([str(f) for f in files[1:]]) == 0  # without the template file: nothing decodable
    assert _json_lines(capsys) == []


def test_cli_table_on_recorded_softflowd_exports(capsys) -> None:
    """Captures recorded from softflowd (v9 and IPFIX, IPv4+IPv6) of ``exporters.traffic(ipv6=True)``."""
    files = [TESTDATA / "softflowd_v9.pcap", TESTDATA / "softflowd_ipfix.pcap"]
    assert main([str(f) for f in files]) == 0
    rows = _json_lines(capsys)
    _, truth = traffic(ipv6=True)
    for name in ("v9", "ipfix"):
        totals: dict = defaultdict(lambda: [0, 0])
        for row in rows:
            if (row["flow_version"] == 9) == (name == "v9"):
                key = (row["src_addr"], row["dst_addr"], row["src_port"], row["dst_port"], row["protocol"])
                totals[key][0] += row["bytes"]
                totals[key][1] += row["packets"]
        assert dict(totals) == truth, name
    assert main([str(files[0]), "--table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["flow_start", "src_addr", "src_port"] and len(table) == 41


def test_cli_missing_file_says_so(tmp_path, capsys) -> None:
    assert main([str(tmp_path / "nope.pcap")]) == 1
    assert "nope.pcap" in capsys.readouterr().err
