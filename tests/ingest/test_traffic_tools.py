"""``flowlens generate`` and ``flowlens replay`` against real UDP sockets."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from ingest.decode import Decoder
from ingest.receive import export_time_us
from ingest.tools import generate, replay
from ingest.tools.capture import ethernet_frame, write_pcap

TESTDATA = Path(__file__).resolve().parent / "testdata"


class Collector:
    """A plain UDP socket that keeps (source, payload) of everything it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]

    def drain(self) -> list[tuple[str, bytes]]:
        out = []
        try:
            while True:
                payload, addr = self.sock.recvfrom(65535)
                out.append((addr[0], payload))
        except TimeoutError:
            return out


def test_generate_is_deterministic_and_stamps_the_past(capsys, tmp_path):
    start = "2026-11-20T08:00:00Z"
    runs = []
    for _ in range(2):
        collector = Collector()
        argv = ["--target", f"127.0.0.1:{collector.port}", "--flows", "9000", "--versions", "5,9,10",
                "--seed", "4", "--start", start, "--speed", "60", "--rate", "0",
                "--truth", str(tmp_path / "t.json")]  # fmt: skip
        assert generate.main(argv) == 0
        runs.append((collector.drain(), json.loads(capsys.readouterr().out)))
        collector.sock.close()
    (first, summary), (second, _) = runs
    assert len(first) == summary["packets"] and {s for s, _ in first} == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    # Same seed, same flows: identical packets except where the header carries the sending clock.
    assert [len(p) for _, p in first] == [len(p) for _, p in second]
    start_us = int(datetime(2026, 11, 20, 8, tzinfo=UTC).timestamp() * 1e6)
    stamps = [export_time_us(p) for _, p in first]
    assert all(start_us <= s < start_us + 3_600_000_000 for s in stamps)  # exported at the simulated clock
    decoded = Decoder().decode_many([(s, p, 0) for s, p in first])
    truth = json.loads((tmp_path / "t.json").read_text())
    assert decoded.num_rows == summary["flows"] == 9000 == sum(row["flows"] for row in truth)
    assert int(pa.compute.sum(decoded.column("bytes")).as_py()) == summary["flow_bytes"]


def test_generator_same_seed_same_flows():
    a = generate.Generator(generate.Plan(flows=3000, seed=9, versions=(9,)))
    b = generate.Generator(generate.Plan(flows=3000, seed=9, versions=(9,)))
    clock = iter(range(1_700_000_000_000_000, 1_800_000_000_000_000, 1_000_000))
    list(a.steps(lambda: next(clock)))
    clock = iter(range(1_700_000_000_000_000, 1_800_000_000_000_000, 1_000_000))
    list(b.steps(lambda: next(clock)))
    assert a.truth().equals(b.truth()) and a.truth().num_rows > 100
    services = set(zip(a.truth().column("dst_port").to_pylist(), a.truth().column("protocol").to_pylist(), strict=True))
    assert {(443, 6), (53, 17), (123, 17), (5432, 6), (8080, 6)} <= services


def test_replay_raw_payload_files_in_order(capsys):
    files = sorted(TESTDATA.glob("softflowd_*.dat"))
    assert len(files) == 5, "tests/ingest/testdata holds softflowd's five datagrams"
    collector = Collector()
    assert replay.main([*map(str, files), "--target", f"127.0.0.1:{collector.port}", "--pps", "2000"]) == 0
    got = collector.drain()
    collector.sock.close()
    assert [p for _, p in got] == [f.read_bytes() for f in files]
    assert json.loads(capsys.readouterr().out)["datagrams"] == len(files)


def test_replay_capture_keeps_exporters_and_pace(tmp_path):
    payloads = [bytes([i]) * (50 + i) for i in range(6)]
    sources = [b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"]
    frames = []
    for i, payload in enumerate(payloads):
        header = ethernet_frame(sources[i % 2], b"\x0a\x00\x00\x09", 17, 5000, 2055, len(payload))[: -len(payload)]
        frames.append((1_000_000 + i * 100_000, header + payload))  # 100 ms apart
    pcap = tmp_path / "cap.pcap"
    write_pcap(pcap, frames)
    collector = Collector()
    started = time.monotonic()
    result = replay.replay(replay.load([pcap]), ("127.0.0.1", collector.port), speed=2.0, keep_sources=True)
    took = time.monotonic() - started
    got = collector.drain()
    collector.sock.close()
    assert [p for _, p in got] == payloads
    assert [s for s, _ in got] == ["127.0.0.1", "127.0.0.2"] * 3  # two exporters stay two senders
    assert result["exporters"] == 2 and took >= 0.25  # 500 ms of capture at speed 2


def test_replay_refuses_empty_input(tmp_path, capsys):
    empty = tmp_path / "empty.pcap"
    write_pcap(empty, [])
    assert replay.main([str(empty), "--target", "127.0.0.1:9"]) == 1
    assert "no UDP datagrams" in capsys.readouterr().err
