"""Reverse DNS (PTR) over asyncio UDP: bounded concurrency, per-lookup timeout, a lookups/s budget.

The client is small on purpose: one PTR question per datagram (RFC 1035 §4), answers matched by
query id *and* question, compression pointers followed with a loop guard. What it promises:

- at most ``concurrency`` queries in flight and at most ``lookups_per_second`` started per second
  (a token bucket with one second of burst, kept across windows in one process);
- each lookup waits ``timeout_seconds`` at most; a timeout leaves the hostname null and is counted;
- a window spends at most ``max_seconds_per_window`` starting lookups; addresses not reached are
  *deferred* (counted) and tried in a later window, so a large cold window never stalls the pipeline;
- a dead resolver costs one timeout: after ``concurrency`` consecutive timeouts the window's lookups
  stop and the rest are deferred.

Outcomes per address: ``ok`` (hostname), ``negative`` (NXDOMAIN or no PTR: cached with the
negative TTL), ``timeout``, ``failure`` (SERVFAIL, REFUSED, truncated or malformed: not cached),
``deferred``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import random
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

PTR, IN = 12, 1
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
STATUSES = ("ok", "negative", "timeout", "failure", "deferred")


class DNSFormatError(ValueError):
    """A datagram that is not a well-formed DNS message."""


# --- wire format (RFC 1035) --------------------------------------------------------------------
def reverse_name(ip: str) -> str:
    """``10.1.2.3`` -> ``3.2.1.10.in-addr.arpa``; IPv6 -> nibble form under ``ip6.arpa``."""
    return ipaddress.ip_address(ip).reverse_pointer


def encode_name(name: str) -> bytes:
    labels = [label for label in name.rstrip(".").split(".") if label]
    out = bytearray()
    for label in labels:
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise ValueError(f"DNS label longer than 63 bytes in {name!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\x00")


def _escape_label(raw: bytes) -> str:
    # RFC 4343 presentation form: keeps newlines and other control bytes out of cached values
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in raw)


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` (following compression pointers) and the offset just after it."""
    labels: list[str] = []
    end = None
    for _ in range(128):  # guards against pointer loops
        if offset >= len(data):
            raise DNSFormatError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DNSFormatError("truncated compression pointer")
            end = offset + 2 if end is None else end
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), (offset + 1 if end is None else end)
        labels.append(_escape_label(data[offset + 1 : offset + 1 + length]))
        offset += 1 + length
    raise DNSFormatError("too many compression pointers")


def build_query(query_id: int, name: str, qtype: int = PTR) -> bytes:
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)  # RD set
    return header + encode_name(name) + struct.pack(">HH", qtype, IN)


def parse_query(data: bytes) -> tuple[int, str, int]:
    """(id, name, qtype) of a query; used by the loopback test server."""
    if len(data) < 12:
        raise DNSFormatError("shorter than a DNS header")
    query_id, _flags, qdcount = struct.unpack(">HHH", data[:6])
    if qdcount != 1:
        raise DNSFormatError("expected one question")
    name, offset = read_name(data, 12)
    qtype, _qclass = struct.unpack(">HH", data[offset : offset + 4])
    return query_id, name, qtype


def parse_ptr_response(data: bytes, question: bytes) -> tuple[str, str | None]:
    """(status, hostname) of a response to ``question`` (the query's question section)."""
    if len(data) < 12:
        raise DNSFormatError("shorter than a DNS header")
    _id, flags, qdcount, ancount = struct.unpack(">HHHH", data[:8])
    if not flags & 0x8000:
        raise DNSFormatError("not a response")
    if data[12 : 12 + len(question)].lower() != question.lower():
        raise DNSFormatError("answer to a different question")
    rcode = flags & 0x000F
    if rcode == NXDOMAIN:
        return "negative", None
    if rcode != NOERROR or flags & 0x0200:  # error, or truncated (a PTR answer never needs TCP)
        return "failure", None
    offset = 12 + len(question) if qdcount == 1 else _skip_questions(data, qdcount)
    for _ in range(ancount):
        _name, offset = read_name(data, offset)
        if offset + 10 > len(data):
            raise DNSFormatError("truncated resource record")
        rtype, _rclass, _ttl, rdlength = struct.unpack(">HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == PTR:
            hostname, _ = read_name(data, offset)
            return ("ok", hostname) if hostname else ("negative", None)
        offset += rdlength
    return "negative", None  # NOERROR without a PTR record (NODATA)


def _skip_questions(data: bytes, count: int) -> int:
    offset = 12
    for _ in range(count):
        _name, offset = read_name(data, offset)
        offset += 4
    return offset


def build_ptr_response(query: bytes, hostname: str | None, rcode: int = NOERROR, ttl: int = 3600) -> bytes:
    """A response to ``query``: one PTR answer when ``hostname`` is given (for the test server)."""
    query_id, name, _qtype = parse_query(query)
    question = encode_name(name) + struct.pack(">HH", PTR, IN)
    answers = 1 if hostname and rcode == NOERROR else 0
    header = struct.pack(">HHHHHH", query_id, 0x8180 | rcode, 1, answers, 0, 0)
    body = header + question
    if answers:
        rdata = encode_name(hostname)
        body += struct.pack(">HHHIH", 0xC00C, PTR, IN, ttl, len(rdata)) + rdata
    return body


# --- the resolver ------------------------------------------------------------------------------
def system_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """Nameserver addresses from resolv.conf (empty when there is none)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    servers = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            servers.append(parts[1].split("%")[0])  # drop an IPv6 zone index
    return servers


@dataclass
class DNSStats:
    lookups: int = 0  # queries sent
    answered: int = 0
    negative: int = 0
    timeouts: int = 0
    failures: int = 0
    deferred: int = 0  # left for a later window (budget, deadline or dead resolver)
    resolver_down: bool = False
    seconds: float = 0.0

    def as_dict(self, prefix: str = "dns_") -> dict[str, float | int | bool]:
        return {prefix + k: v for k, v in self.__dict__.items()}


@dataclass
class _TokenBucket:
    rate: float
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.rate  # one second of burst

    async def take(self, deadline: float) -> bool:
        """Wait for a token; False when none comes before ``deadline`` (monotonic clock)."""
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            wait = (1 - self.tokens) / self.rate
            if now + wait >= deadline:
                return False
            await asyncio.sleep(wait)


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket connected to one nameserver; replies are routed to waiting lookups by id."""

    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 2:
            future = self.pending.get(struct.unpack(">H", data[:2])[0])
            if future is not None and not future.done():
                future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the lookups waiting on this socket time out
        pass

    def new_id(self) -> int:
        while True:
            query_id = random.getrandbits(16)
            if query_id not in self.pending:
                return query_id


class ReverseResolver:
    """PTR lookups for many addresses at once; see the module docstring for the guarantees."""

    def __init__(
        self,
        nameservers: list[str] | None = None,
        port: int = 53,
        timeout_seconds: float = 1.0,
        concurrency: int = 64,
        lookups_per_second: float = 500,
        max_seconds_per_window: float = 5.0,
    ) -> None:
        self.nameservers = list(nameservers or system_nameservers())
        self.port = port
        self.timeout = timeout_seconds
        self.concurrency = concurrency
        self.max_seconds = max_seconds_per_window
        self.bucket = _TokenBucket(lookups_per_second)

    @classmethod
    def from_config(cls, dns) -> ReverseResolver:
        """From the ``dns`` config section (ingest.config.DNSConfig)."""
        return cls(
            nameservers=dns.nameservers,
            port=dns.port,
            timeout_seconds=dns.timeout_seconds,
            concurrency=dns.concurrency,
            lookups_per_second=dns.lookups_per_second,
            max_seconds_per_window=dns.max_seconds_per_window,
        )

    def resolve(self, ips: list[str]) -> tuple[pl.DataFrame, DNSStats]:
        """Look up ``ips`` (text). Returns a frame (ip, status, hostname) with one row per address
        actually looked up (the others were deferred: absent, counted in the stats) and the stats."""
        stats = DNSStats()
        started = time.monotonic()
        results: dict[str, tuple[str, str | None]] = {}
        if ips and not self.nameservers:
            stats.resolver_down = True
        elif ips:
            try:
                results = _run_async(self._resolve_all(ips, stats))
            except OSError as exc:  # e.g. a nameserver that is not an address: no lookups this window
                log.warning("reverse DNS unavailable (%s); check dns.nameservers and dns.port", exc)
                stats.resolver_down = True
        stats.deferred = len(ips) - len(results)
        frame = pl.DataFrame(
            {
                "ip": list(results),
                "status": [status for status, _ in results.values()],
                "hostname": [hostname for _, hostname in results.values()],
            },
            schema={"ip": pl.String, "status": pl.Enum(STATUSES), "hostname": pl.String},
        )
        stats.seconds = time.monotonic() - started
        return frame, stats

    async def _resolve_all(self, ips: list[str], stats: DNSStats) -> dict[str, tuple[str, str | None]]:
        loop = asyncio.get_running_loop()
        endpoints = []
        for server in self.nameservers:
            _transport, endpoint = await loop.create_datagram_endpoint(_Endpoint, remote_addr=(server, self.port))
            endpoints.append(endpoint)
        deadline = time.monotonic() + self.max_seconds
        queue = iter(ips)
        results: dict[str, tuple[str, str | None]] = {}
        state = {"consecutive_timeouts": 0}

        def stopped() -> bool:
            return stats.resolver_down or time.monotonic() >= deadline

        async def worker(n: int) -> None:
            endpoint = endpoints[n % len(endpoints)]
            for ip in queue:
                if stopped():
                    return
                if not await self.bucket.take(deadline) or stopped():
                    return
                status, hostname = await self._lookup(endpoint, ip)
                if status == "deferred":
                    continue
                results[ip] = (status, hostname)
                self._count(stats, status, state)
                if stats.resolver_down:
                    # a dead resolver costs one timeout: release the lookups still waiting on it
                    for other in endpoints:
                        for future in other.pending.values():
                            future.cancel()

        try:
            await asyncio.gather(*(worker(n) for n in range(min(self.concurrency, len(ips)))))
        finally:
            for endpoint in endpoints:
                endpoint.transport.close()
        return results

    def _count(self, stats: DNSStats, status: str, state: dict[str, int]) -> None:
        stats.lookups += 1
        if status == "timeout":
            stats.timeouts += 1
            state["consecutive_timeouts"] += 1
            if state["consecutive_timeouts"] >= self.concurrency:
                stats.resolver_down = True
            return
        state["consecutive_timeouts"] = 0
        if status == "ok":
            stats.answered += 1
        elif status == "negative":
            stats.negative += 1
        else:
            stats.failures += 1

    async def _lookup(self, endpoint: _Endpoint, ip: str) -> tuple[str, str | None]:
        query_id = endpoint.new_id()
        query = build_query(query_id, reverse_name(ip))
        question = query[12:]
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        endpoint.pending[query_id] = future
        try:
            endpoint.transport.sendto(query)
            reply = await asyncio.wait_for(future, self.timeout)
            return parse_ptr_response(reply, question)
        except TimeoutError:
            return "timeout", None
        except asyncio.CancelledError:
            if future.cancelled() and not _current_task_cancelling():
                return "deferred", None  # released because the resolver was declared down
            raise
        except (DNSFormatError, struct.error, UnicodeDecodeError, OSError):
            return "failure", None
        finally:
            endpoint.pending.pop(query_id, None)


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _run_async(coro):
    """Run ``coro`` to completion from synchronous code, even when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
