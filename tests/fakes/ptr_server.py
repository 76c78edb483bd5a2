"""A tiny authoritative PTR server on loopback, for tests and ``flowlens bench enrich``.

It answers PTR queries from a mapping address -> hostname (NXDOMAIN for the rest) and can be
switched to misbehave: ``mode = "ignore"`` drops every query (a dead resolver), ``"delay"`` answers
after ``delay_seconds`` (a slow one), ``"servfail"`` answers SERVFAIL. It runs its own event loop
in a daemon thread, so synchronous code can start it, query it and stop it::

    with PTRServer({"192.0.2.7": "web.example.net"}) as server:
        resolver = ReverseResolver(["127.0.0.1"], port=server.port)
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections import Counter

from assets.enrich.dns import NXDOMAIN, PTR, SERVFAIL, DNSFormatError, build_ptr_response, parse_query


def _address_of(reverse: str) -> str | None:
    """The address a reverse name points at (``3.2.1.10.in-addr.arpa`` -> ``10.1.2.3``)."""
    name = reverse.lower().rstrip(".")
    if name.endswith(".in-addr.arpa"):
        return ".".join(reversed(name.removesuffix(".in-addr.arpa").split(".")))
    if name.endswith(".ip6.arpa"):
        nibbles = "".join(reversed(name.removesuffix(".ip6.arpa").split(".")))
        return str(ipaddress.IPv6Address(int(nibbles, 16))) if len(nibbles) == 32 else None
    return None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: PTRServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        server = self.server
        server.queries["total"] += 1
        if server.mode == "ignore":
            return
        try:
            reply = server.answer(data)
        except (DNSFormatError, ValueError):
            server.queries["malformed"] += 1
            return
        if server.mode == "delay":
            asyncio.get_running_loop().call_later(server.delay_seconds, self.transport.sendto, reply, addr)
        else:
            self.transport.sendto(reply, addr)


class PTRServer:
    """Serve ``names`` (address text -> hostname) on ``host``:``port`` (0 = any free port)."""

    def __init__(self, names: dict[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.names = {str(ipaddress.ip_address(ip)): name for ip, name in names.items()}
        self.host = host
        self.port = port
        self.mode = "answer"
        self.delay_seconds = 0.0
        self.queries: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._transport: asyncio.DatagramTransport | None = None

    def answer(self, query: bytes) -> bytes:
        _query_id, name, qtype = parse_query(query)
        if self.mode == "servfail":
            return build_ptr_response(query, None, SERVFAIL)
        address = _address_of(name) if qtype == PTR else None
        hostname = self.names.get(address) if address else None
        self.queries["answered" if hostname else "nxdomain"] += 1
        return build_ptr_response(query, hostname, 0 if hostname else NXDOMAIN)

    def start(self) -> PTRServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            endpoint = self._loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=(self.host, self.port))
            self._transport, _ = self._loop.run_until_complete(endpoint)
            self.port = self._transport.get_extra_info("sockname")[1]
            ready.set()
            self._loop.run_forever()
            self._transport.close()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="ptr-server", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError(f"the PTR test server could not bind {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = self._thread = None

    def __enter__(self) -> PTRServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
