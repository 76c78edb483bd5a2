"""Receiving UDP export packets: sockets, the exporter allow-list and a fair per-exporter queue.

Every receiving process opens its own socket on each listen address with ``SO_REUSEPORT``, so the
kernel spreads packets over the processes (by the exporter's address: :mod:`ingest.reuseport`). A dedicated thread
(:class:`Receiver`) only reads: it drains each readable socket without blocking (on Linux one
``recvmmsg`` per socket per pass, see :mod:`ingest.mmsg`), stamps the packets with one clock
reading per drain, checks the allow-list and puts them in a :class:`FairQueue`. Datagrams longer
than ``ingest.max_datagram_bytes`` (or than a 64 KiB slot) are counted (``oversized``), not kept:
no exporter sends them, so they are junk or an attack, and the decoder must not spend time on them.
Decoding and landing happen in other threads, so receiving never waits on them.

Fairness: the queue keeps one FIFO per exporter and the decoder takes packets round-robin. When the
queue is full the packet dropped is the newest of the exporter holding the most packets, so a
flooding exporter loses its own packets and the others keep flowing.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter

from ingest import mmsg

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65_535  # the recvfrom path's buffer; the recvmmsg path has 64 KiB slots
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


# A received packet: (exporter address as text, payload, window time in µs). A plain tuple because
# it is built per packet on the hot path and is exactly what Decoder.decode_many takes.
Packet = tuple[str, bytes, int]
EXPORTER, PAYLOAD, STAMP = 0, 1, 2


def open_udp_socket(host: str, port: int, rcvbuf: int) -> socket.socket:
    """A non-blocking UDP socket bound with SO_REUSEPORT and the largest receive buffer allowed.

    Linux caps SO_RCVBUF at net.core.rmem_max; as root SO_RCVBUFFORCE goes past that cap. When the
    buffer still ends up smaller than asked, log a warning that says how to raise it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        set_receive_buffer(sock, rcvbuf)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def set_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Ask for ``wanted`` bytes of receive buffer; return what the kernel granted (warn if less)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
    except OSError:  # not root (no CAP_NET_ADMIN): the ordinary option, capped by rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports double
    if granted < wanted:
        log.warning(
            "UDP receive buffer is %d bytes, %d asked: the kernel caps it (raise it with "
            "`sysctl -w net.core.rmem_max=%d` or run as root); bursts may be dropped by the kernel",
            granted, wanted, wanted,
        )  # fmt: skip
    return granted


class AllowList:
    """Exporter allow-list of addresses/CIDRs, with a per-address verdict cache."""

    def __init__(self, cidrs: Iterable[str]):
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self._cache: dict[str, bool] = {}

    def allows(self, address: str) -> bool:
        verdict = self._cache.get(address)
        if verdict is None:
            verdict = self._check(address)
            if len(self._cache) < 100_000:  # a spoofed-source flood must not grow memory forever
                self._cache[address] = verdict
        return verdict

    def _check(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


@dataclass
class FairQueue:
    """Bounded packet queue with one FIFO per exporter, drained round-robin (thread-safe)."""

    max_packets: int = 50_000
    queues: dict[str, deque[Packet]] = field(default_factory=dict)
    size: int = 0
    dropped: int = 0  # packets refused because their exporter held the largest share of a full queue

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._order: deque[str] = deque()  # round-robin order of exporters with queued packets
        self._in_flight: int | None = None  # oldest stamp taken by the decoder and not yet released

    def put_many(self, packets: list[Packet]) -> None:
        """Queue ``packets`` (in arrival order); when full, shed from the largest exporter's FIFO."""
        with self._cond:
            if self.size + len(packets) <= self.max_packets:
                self._extend(packets)
            else:
                self._put_shedding(packets)
            self._cond.notify()

    def _extend(self, packets: list[Packet]) -> None:
        """The common case, nothing to shed: one deque extend per run of one exporter's packets.

        Packets from a socket come in runs (an exporter sends a burst), so grouping consecutive
        packets costs far less per packet than appending them one by one.
        """
        for exporter, run in groupby(packets, key=itemgetter(EXPORTER)):
            self._fifo(exporter).extend(run)
        self.size += len(packets)

    def _put_shedding(self, packets: list[Packet]) -> None:
        """Packet by packet, shedding as soon as the queue overflows (the decision depends on it)."""
        for pkt in packets:
            self._fifo(pkt[EXPORTER]).append(pkt)
            self.size += 1
            if self.size > self.max_packets:
                self._shed_largest()

    def _fifo(self, exporter: str) -> deque:
        """The exporter's FIFO, put back in the round-robin order when it was empty."""
        q = self.queues.get(exporter)
        if q is None:
            q = self.queues[exporter] = deque()
        if not q:
            self._order.append(exporter)
        return q

    def _shed_largest(self) -> None:
        exporter = max(self.queues, key=lambda e: len(self.queues[e]))
        self.queues[exporter].pop()
        self.size -= 1
        self.dropped += 1
        if not self.queues[exporter]:
            self._order.remove(exporter)
            del self.queues[exporter]

    def take(self, max_packets: int, timeout: float, linger: float = 0.0) -> list[Packet]:
        """Up to ``max_packets`` packets, round-robin over exporters (a quantum of 64 each).

        Waits up to ``timeout`` for a first packet, then up to ``linger`` more for the batch to
        fill: decoding has a fixed cost per call, so a few fuller batches beat many small ones.
        """
        deadline = time.monotonic() + timeout
        out: list[Packet] = []
        with self._cond:
            while not self.size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return out
                self._cond.wait(remaining)
            full_by = time.monotonic() + linger
            while self.size < max_packets and (remaining := full_by - time.monotonic()) > 0:
                self._cond.wait(remaining)
            while self.size and len(out) < max_packets:
                exporter = self._order.popleft()
                q = self.queues[exporter]
                for _ in range(min(64, len(q), max_packets - len(out))):
                    out.append(q.popleft())
                    self.size -= 1
                if q:
                    self._order.append(exporter)
                else:
                    del self.queues[exporter]  # forget idle exporters (spoofed floods, restarts)
            self._in_flight = min(p[STAMP] for p in out)
        return out

    def release(self) -> None:
        """The packets of the last :meth:`take` are now downstream (decoded and queued, or dropped)."""
        self._in_flight = None

    def oldest_stamp(self) -> int | None:
        """The oldest window time still held here (queued or taken and not released)."""
        with self._cond:
            heads = [q[0][STAMP] for q in self.queues.values() if q]
            if self._in_flight is not None:
                heads.append(self._in_flight)
            return min(heads) if heads else None


def export_time_us(payload: bytes) -> int | None:
    """The export time in a NetFlow v5/v9 or IPFIX header, in µs since the epoch; None if unknown."""
    if len(payload) < 16:
        return None
    version = payload[0] << 8 | payload[1]
    if version in (5, 9):
        seconds = struct.unpack_from("!I", payload, 8)[0]
        nanos = struct.unpack_from("!I", payload, 12)[0] if version == 5 else 0
        return seconds * 1_000_000 + min(nanos, 999_999_999) // 1000
    if version == 10:
        return struct.unpack_from("!I", payload, 4)[0] * 1_000_000
    return None


def name_this_thread(name: str) -> None:
    """Give the calling thread an OS-level name (Linux), so ``top -H`` and ``ps -L`` tell the
    receive, decode and landing threads apart. Best effort: silently skipped elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


BUSY = -1  # Receiver.pending while a drain is stamping packets not yet in the queue


class Receiver(threading.Thread):
    """The receive thread: drains sockets into a FairQueue, filtering on the allow-list.

    Each packet gets a window time: the clock at the drain (``timestamp_source: receive``) or the
    export time in its header (``export``). For watermarks, :attr:`pending` is :data:`BUSY` while a
    drain holds stamped packets that are not in the queue yet, and :attr:`max_stamp` is the newest
    window time queued so far.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        queue: FairQueue,
        allow: AllowList,
        stats,
        use_export_time: bool = False,
        coalesce_seconds: float = 0.0,
        max_datagram_bytes: int = MAX_DATAGRAM,
    ):
        super().__init__(name="flowlens-receive", daemon=True)
        self.max_datagram_bytes = max_datagram_bytes
        self.sockets = sockets
        self.queue = queue
        self.allow = allow
        self.stats = stats
        self.use_export_time = use_export_time
        self.stopping = threading.Event()
        self.drain_limit = 256  # packets per socket per pass, so several sockets take turns
        # After a pass that found little, pause before the next select: at high rates waking up
        # for every datagram costs more than reading them; the socket buffer holds the pause.
        self.coalesce_seconds = coalesce_seconds
        self.pending: int | None = None
        self.max_stamp = 0
        # recvmmsg: one system call per drain instead of one per datagram (Linux; else recvfrom)
        self.use_mmsg = mmsg.available()
        self._readers: dict[socket.socket, mmsg.MmsgReceiver] = {}
        # drain_all() on shutdown runs after run() ended, or its 5 s join gave up: never both at once
        self._read_lock = threading.Lock()

    def run(self) -> None:
        name_this_thread(self.name)
        sel = selectors.DefaultSelector()
        for sock in self.sockets:
            sel.register(sock, selectors.EVENT_READ)
        try:
            while not self.stopping.is_set():
                read = sum(self._drain(key.fileobj) for key, _ in sel.select(timeout=0.1))
                if 0 < read < self.drain_limit // 4 and self.coalesce_seconds:
                    self.stopping.wait(self.coalesce_seconds)
        finally:
            sel.close()

    def drain_all(self) -> None:
        """Read what is still queued in the sockets (used on shutdown, after run() ended)."""
        for sock in self.sockets:
            while self._drain(sock) == self.drain_limit:
                pass

    def _drain(self, sock: socket.socket) -> int:
        """Read up to :attr:`drain_limit` datagrams from ``sock`` into the queue; return how many."""
        self.pending = BUSY
        now_us = time.time_ns() // 1000
        if self.use_mmsg:
            payloads, sources, truncated = self._read_batch(sock)
        else:
            (payloads, sources), truncated = self._recv_each(sock), 0
        if self.max_datagram_bytes < MAX_DATAGRAM and payloads:
            payloads, sources, truncated = self._not_oversized(payloads, sources, truncated)
        if truncated:
            self.stats.packets_dropped["oversized"] += truncated
        packets = self._stamp(payloads, sources, now_us)
        refused = len(payloads) - len(packets)
        if refused:
            self.stats.packets_dropped["not_allowed"] += refused
        if packets:
            self.stats.packets_received += len(packets)
            before = self.queue.dropped
            self.queue.put_many(packets)
            if self.queue.dropped != before:
                self.stats.packets_dropped["fairness"] += self.queue.dropped - before
            newest = max(p[STAMP] for p in packets) if self.use_export_time else now_us
            self.max_stamp = max(self.max_stamp, newest)
        self.pending = None
        return len(payloads) + truncated

    def _read_batch(self, sock: socket.socket) -> tuple[list[bytes], list[str], int]:
        """One recvmmsg on ``sock``: payloads, senders, and how many datagrams were truncated."""
        with self._read_lock:  # a reader's buffers serve one call at a time
            reader = self._readers.get(sock)
            if reader is None or reader.slots < self.drain_limit:
                reader = self._readers[sock] = mmsg.MmsgReceiver(sock, slots=self.drain_limit)
            before = reader.truncated
            try:
                payloads, sources = reader.read(self.drain_limit)
            except OSError as exc:  # e.g. ICMP errors surfaced on the socket: not fatal
                log.debug("recvmmsg: %s", exc)
                payloads, sources = [], []
            return payloads, sources, reader.truncated - before

    def _recv_each(self, sock: socket.socket) -> tuple[list[bytes], list[str]]:
        """The portable path: one ``recvfrom`` per datagram, same results as the recvmmsg reader."""
        payloads: list[bytes] = []
        sources: list[str] = []
        for _ in range(self.drain_limit):
            try:
                payload, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors surfaced on the socket: not fatal
                log.debug("recvfrom: %s", exc)
                break
            host = addr[0]
            payloads.append(payload)
            sources.append(host[7:] if host.startswith("::ffff:") else host)
        return payloads, sources

    def _not_oversized(self, payloads: list[bytes], sources: list[str], oversized: int):
        """Payloads and senders without the datagrams over ``max_datagram_bytes``, and how many were
        oversized in all (``oversized`` = those the reader already cut off at its slot size)."""
        limit = self.max_datagram_bytes
        if max(map(len, payloads)) <= limit:
            return payloads, sources, oversized
        kept = [(p, s) for p, s in zip(payloads, sources, strict=True) if len(p) <= limit]
        return [p for p, _ in kept], [s for _, s in kept], oversized + len(payloads) - len(kept)

    def _stamp(self, payloads: list[bytes], sources: list[str], now_us: int) -> list[Packet]:
        """Packets from allowed exporters, with their window time (the allow-list is asked once
        per distinct sender, not per packet: a drain holds a handful of exporters)."""
        allows = self.allow.allows
        denied = {host for host in set(sources) if not allows(host)}
        if self.use_export_time:
            packets = [(h, p, export_time_us(p) or now_us) for h, p in zip(sources, payloads, strict=True)]
        else:
            packets = [(h, p, now_us) for h, p in zip(sources, payloads, strict=True)]
        return [pkt for pkt in packets if pkt[EXPORTER] not in denied] if denied else packets
