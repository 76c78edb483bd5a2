"""Real exporter harness: a generated capture, softflowd exporting it, nfcapd/nfdump decoding it."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from ingest.tools.capture import ethernet_frame, write_pcap

Key = tuple[str, str, int, int, int]  # src, dst, src port, dst port, protocol
TIMES: dict[Key, list[int]] = {}  # first and last packet time (µs) per key of the last traffic()


def traffic(ipv6: bool) -> tuple[list[tuple[int, bytes]], dict[Key, list[int]]]:
    """Deterministic frames (TCP and UDP, 1-7 packets per flow) and their per-key [bytes, packets].

    Frames are stamped a minute ago: softflowd computes sysUptime-relative times from its own
    start, so a capture from years ago would wrap them around 2^32 ms (an exporter artefact)."""
    import ipaddress

    frames, truth, spans = [], defaultdict(lambda: [0, 0]), {}
    t = (int(time.time()) - 60) * 1_000_000
    for i in range(40):
        v6 = ipv6 and i % 3 == 0
        src = bytes.fromhex(f"20010db8{i:024x}") if v6 else bytes([10, 0, i // 250, i % 250 + 1])
        dst = bytes.fromhex(f"20010db8ffff{i:020x}") if v6 else bytes([192, 0, 2, 200])
        protocol = 6 if i % 2 else 17
        sport, dport = 30000 + i, 443 if protocol == 6 else 53
        for k in range(1 + i % 7):
            payload = (i * 37 + k * 101) % 1200
            flags = 0x11 if protocol == 6 and k == i % 7 else 0x18
            frames.append((t, ethernet_frame(src, dst, protocol, sport, dport, payload, flags)))
            t += 1_000
            header = (8 if protocol == 17 else 20) + (40 if v6 else 20)
            key = (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), sport, dport, protocol)
            truth[key][0] += payload + header
            truth[key][1] += 1
            spans.setdefault(key, [t - 1_000, t - 1_000])[1] = t - 1_000
    TIMES.clear()
    TIMES.update(spans)
    return frames, dict(truth)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def softflowd_export(pcap: Path, version: str, workdir: Path) -> list[bytes]:
    """Run softflowd over ``pcap`` exporting to a loopback socket; return the datagrams received."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(1.5)
        port = sock.getsockname()[1]
        args = ["softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", version, "-d",
                "-p", str(workdir / "softflowd.pid"), "-c", str(workdir / "softflowd.ctl"), "-a"]  # fmt: skip
        if version != "5":
            args.append("-6")
        if version == "10":
            # Absolute flowStart/EndMilliseconds: nfdump 1.7 swaps first/last for softflowd's
            # IPFIX flowStart/EndSysUpTime (seen here: first > last), which would fail the
            # field-by-field comparison for a reason that is not ours.
            args += ["-A", "milli"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _poke_until_exit(proc, workdir / "softflowd.ctl")
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.communicate(timeout=10)[1]
        assert proc.returncode == 0, stderr
        datagrams = []
        try:
            while True:
                datagrams.append(sock.recv(65535))
        except TimeoutError:
            pass
    return datagrams


def _poke_until_exit(proc: subprocess.Popen, control: Path, limit_s: float = 30) -> None:
    """softflowd 1.1.0 reading a file sometimes blocks in accept() on its control socket before
    reading the capture; a harmless ``statistics`` request over that socket unblocks it."""
    deadline = time.monotonic() + limit_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if proc.poll() is None and control.exists() and shutil.which("softflowctl"):
            subprocess.run(["softflowctl", "-c", str(control), "statistics"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=5, check=False)  # fmt: skip


def nfdump_flows(datagrams: list[bytes]) -> list[dict]:
    """Send ``datagrams`` to a fresh nfcapd on loopback, stop it, and read its file with nfdump."""
    workdir = Path(tempfile.mkdtemp(prefix="flowlens-nfcapd-"))
    try:
        port = free_udp_port()
        proc = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(workdir), "-t", "3600"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(1.0)  # nfcapd binds its socket
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for datagram in datagrams:
                    sock.sendto(datagram, ("127.0.0.1", port))
                    time.sleep(0.001)
            time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        files = [f for f in glob.glob(str(workdir / "**" / "nfcapd.*"), recursive=True) if not f.endswith(".current")]
        flows: list[dict] = []
        for path in files:
            out = subprocess.run(["nfdump", "-r", path, "-o", "json"], capture_output=True, text=True, timeout=60,
                                 env=os.environ | {"TZ": "UTC"})  # fmt: skip
            text = out.stdout.strip()
            flows += json.loads(text) if text.startswith("[") else []
        return flows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def write_traffic_pcap(path: Path, ipv6: bool) -> tuple[dict[Key, list[int]], dict[Key, list[int]]]:
    """Write the capture; return (per-key [bytes, packets], per-key [first, last] packet time µs)."""
    frames, truth = traffic(ipv6)
    write_pcap(path, frames)
    return truth, dict(TIMES)
