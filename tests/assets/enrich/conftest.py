"""Fixtures for enrichment tests: real .mmdb files, a real loopback PTR server, flow frames, a TCP proxy.

Addresses used throughout (documentation-free, so they classify as public or private for real):

- 8.8.8.8 / 8.8.4.4: in the City and ASN files (US, Mountain View, AS15169);
- 2a00:1450:4001::1: IPv6, in both files (IE, Dublin, AS15169);
- 1.1.1.1: in the City file only, country without a city (AU);
- 9.9.9.9: in neither file (no record -> nulls);
- 10.0.0.5, 10.0.2.53, 192.168.1.20: private (labelled, never looked up in GeoIP).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from assets.enrich.addresses import to_binary
from ingest.schema import FLOW_SCHEMA
from tests.fakes.mmdb_files import AutonomousSystem, Place, write_asn_db, write_city_db
from tests.fakes.ptr_server import PTRServer

FLOW_DTYPES = {f.name: pl.from_arrow(pa.array([], type=f.type)).dtype for f in FLOW_SCHEMA}
PTR_NAMES = {
    "8.8.8.8": "dns.google",
    "2a00:1450:4001::1": "fra16s.1e100.net",
    "10.0.0.5": "web-1.corp.example",
    "10.0.2.53": "ns1.corp.example",
    # 8.8.4.4, 1.1.1.1, 9.9.9.9 and 192.168.1.20 have no name: NXDOMAIN
}


@pytest.fixture(scope="session")
def mmdb_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(city, asn) GeoLite2-shaped databases, IPv6 with the IPv4 space mapped in."""
    directory = tmp_path_factory.mktemp("mmdb")
    city = write_city_db(
        directory / "city.mmdb",
        {
            "8.8.8.0/24": Place("US", "Mountain View", 37.386, -122.0838),
            "8.8.4.0/24": Place("US", "Mountain View", 37.386, -122.0838),
            "1.1.1.0/24": Place("AU"),
            "2a00:1450::/32": Place("IE", "Dublin", 53.3498, -6.2603),
        },
    )
    asn = write_asn_db(
        directory / "asn.mmdb",
        {
            "8.8.8.0/24": AutonomousSystem(15169, "GOOGLE"),
            "8.8.4.0/24": AutonomousSystem(15169, "GOOGLE"),
            "2a00:1450::/32": AutonomousSystem(15169, "GOOGLE"),
        },
    )
    return city, asn


@pytest.fixture
def ptr_server() -> Iterator[PTRServer]:
    """A PTR server on a free loopback port answering PTR_NAMES (switch ``.mode`` to misbehave)."""
    with PTRServer(PTR_NAMES) as server:
        yield server


@pytest.fixture
def make_flows() -> Callable[[list[tuple[str, str, int, int, int]]], pl.DataFrame]:
    """Build a flow-record frame from (src, dst, src_port, dst_port, protocol) rows of text addresses."""

    def make(rows: list[tuple[str, str, int, int, int]]) -> pl.DataFrame:
        n = len(rows)
        now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
        data = {
            "receive_time": [now] * n,
            "exporter": to_binary(["192.0.2.1"] * n),
            "observation_domain": [0] * n,
            "flow_version": [10] * n,
            "flow_start": [now] * n,
            "flow_end": [now] * n,
            "src_addr": to_binary([r[0] for r in rows]),
            "dst_addr": to_binary([r[1] for r in rows]),
            "src_port": [r[2] for r in rows],
            "dst_port": [r[3] for r in rows],
            "protocol": [r[4] for r in rows],
            "tcp_flags": [0] * n,
            "bytes": [1500] * n,
            "packets": [3] * n,
            "sampling_rate": [1] * n,
            "input_if": [1] * n,
            "output_if": [2] * n,
            "src_as": [0] * n,
            "dst_as": [0] * n,
            "direction": [0] * n,
            "next_hop": [None] * n,
            "as_path": [None] * n,
            "communities": [None] * n,
        }
        return pl.DataFrame(data).with_columns(pl.col(name).cast(dtype) for name, dtype in FLOW_DTYPES.items())

    return make


class TCPProxy:
    """Forwards a loopback port to ``target``; ``close()`` makes the target unreachable mid-run
    (listener closed, live connections reset), ``open()`` brings it back on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> TCPProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets = []


@pytest.fixture
def redis_proxy(clean_redis: str) -> Iterator[tuple[TCPProxy, str]]:
    """(proxy, url): the test Redis database reached through a proxy the test can cut."""
    from urllib.parse import urlparse

    parsed = urlparse(clean_redis)
    proxy = TCPProxy((parsed.hostname, parsed.port)).open()
    yield proxy, f"redis://127.0.0.1:{proxy.port}{parsed.path}"
    proxy.close()
