"""GoFlow2, a Go collector that decodes sFlow, as a peer: built on demand, fed datagrams over UDP.

GoFlow2 (``github.com/netsampler/goflow2``) is the second independent sFlow decoder FlowLens is
compared with (tshark is the first): ``flowlens bench decode`` reports its throughput on the same
datagrams, and ``tests/ingest/decode/test_sflow_goflow2.py`` compares its JSON output field by
field. It is a Go module, so it is built from the Go module proxy with ``go install`` into
``<state_dir>/tools/goflow2-<version>/`` the first time it is needed (never committed); without
``go`` or the proxy, ``binary`` says why and the callers skip.

``Collector`` runs it on a free loopback port (its HTTP metrics port too, so several stacks on one
machine do not collide), on one core (``GOMAXPROCS=1``), writing one message per flow sample to a
file: a JSON object per line (``fmt="json"``, for comparisons), or its protobuf records, each
preceded by its varint length (``fmt="bin"``, what it sends to Kafka; JSON costs it ten times the
CPU, so the throughput baseline uses this). It does not raise its UDP receive buffer, so
datagrams are sent in small bursts with a pause between them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

VERSION = "v2.2.6"
MODULE = "github.com/netsampler/goflow2/v2/cmd/goflow2"
BUILD_TIMEOUT_S = 900
BURST = 32  # datagrams sent before each pause (GoFlow2 keeps the kernel's default receive buffer)
PAUSE_S = 0.002
SETTLE_S = 1.0  # the output file stopped growing this long: every sent datagram is decoded or lost


def binary(state_dir: Path) -> Path | str:
    """The GoFlow2 executable, built once into ``state_dir``; or why it is unavailable."""
    folder = state_dir.resolve() / "tools" / f"goflow2-{VERSION}"
    exe = folder / "goflow2"
    if exe.exists():
        return exe
    go = shutil.which("go")
    if go is None:
        return "go is not installed (GoFlow2 is built from the Go module proxy)"
    folder.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"GOBIN": str(folder)}
    try:
        done = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"go install {MODULE}@{VERSION} took over {BUILD_TIMEOUT_S} s (is the Go module proxy reachable?)"
    if done.returncode != 0 or not exe.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"go install {MODULE}@{VERSION} failed: {last}"
    return exe


def _split(data: bytes, fmt: str) -> tuple[list[bytes], int]:
    """The whole messages at the start of ``data`` and the bytes they take: JSON lines, or
    protobuf records each preceded by its varint length (a developer tool: a loop is fine)."""
    if fmt == "json":
        used = data.rfind(b"\n") + 1
        return data[:used].splitlines(), used
    found, pos = [], 0
    while pos < len(data):
        size, shift, at = 0, 0, pos
        while at < len(data) and data[at] & 0x80:
            size |= (data[at] & 0x7F) << shift
            shift, at = shift + 7, at + 1
        if at >= len(data) or at + 1 + (size | data[at] << shift) > len(data):
            break  # a record still being written
        size |= data[at] << shift
        found.append(data[at + 1 : at + 1 + size])
        pos = at + 1 + size
    return found, pos


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """A running GoFlow2 listening for sFlow on a loopback port, its JSON output in a file."""

    def __init__(self, exe: Path, fmt: str = "json") -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="flowlens-goflow2-"))
        self.output = self.folder / f"flows.{fmt}"
        self.output.touch()
        self.fmt = fmt
        self.port = _free_port(socket.SOCK_DGRAM)
        separator = "\n" if fmt == "json" else ""  # protobuf records carry their own lengths
        command = [str(exe), f"-listen=sflow://127.0.0.1:{self.port}?count=1", f"-format={fmt}",
                   "-transport=file", f"-transport.file={self.output}", f"-transport.file.sep={separator}",
                   f"-addr=127.0.0.1:{_free_port(socket.SOCK_STREAM)}", "-loglevel=error"]  # fmt: skip
        env = os.environ | {"GOMAXPROCS": "1"}  # one core, as the figures it is compared with
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.read = 0  # bytes of the output already returned
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 20.0) -> None:
        """Until GoFlow2's UDP socket is bound (its port appears in /proc/net/udp)."""
        deadline = time.monotonic() + timeout_s
        needle = f":{self.port:04X} "
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"goflow2 exited: {err.strip()[-300:]}")
            if needle in Path("/proc/net/udp").read_text():
                return
            time.sleep(0.05)
        raise RuntimeError("goflow2 did not bind its sFlow port in time")

    def cpu_seconds(self) -> float:
        """User + system CPU the collector has used so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def send(self, datagrams: Sequence[bytes]) -> None:
        for i, datagram in enumerate(datagrams):
            self.sock.sendto(datagram, ("127.0.0.1", self.port))
            if i % BURST == BURST - 1:
                time.sleep(PAUSE_S)

    def messages(self, expected: int, timeout_s: float = 60.0) -> list[bytes]:
        """The messages written since the last call: waits for ``expected`` of them, or until
        the output stops growing (datagrams lost in the kernel's buffer)."""
        deadline = time.monotonic() + timeout_s
        size, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = self.output.stat().st_size
            if now_size != size:
                size, still_since = now_size, time.monotonic()
            with self.output.open("rb") as f:
                f.seek(self.read)
                chunk = f.read()
            found, used = _split(chunk, self.fmt)
            if len(found) >= expected or time.monotonic() - still_since > SETTLE_S:
                self.read += used
                return found
            time.sleep(0.05)
        raise RuntimeError("goflow2 output did not settle")

    def decode(self, datagrams: Sequence[bytes], expected: int) -> list[dict]:
        """Send ``datagrams`` and return the flow samples GoFlow2 decoded, as dicts."""
        self.send(datagrams)
        return [json.loads(line) for line in self.messages(expected)]

    def close(self) -> None:
        self.sock.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
