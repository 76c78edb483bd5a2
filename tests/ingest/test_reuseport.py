"""Exporters pinned to receiving processes by source address (real sockets over loopback)."""

from __future__ import annotations

import socket
import struct
from collections import defaultdict

import pytest

from flowlens_dagster.bench.ingest import free_udp_port
from ingest.receive import open_udp_socket
from ingest.reuseport import MOD_K, balance_by_exporter, exporter_program


def _deliveries(processes: int, attach: bool) -> dict[str, set[int]]:
    """Which socket of the group received each exporter's datagrams (3 source ports each)."""
    port = free_udp_port()
    group = [open_udp_socket("127.0.0.1", port, 1 << 20) for _ in range(processes)]
    try:
        if attach:
            assert balance_by_exporter(group[-1], processes)
        for last in range(1, 9):
            for _ in range(3):  # a new source port each time, as after an exporter reboot
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.bind((f"127.0.0.{last}", 0))
                    sender.sendto(b"flow", ("127.0.0.1", port))
        seen: dict[str, set[int]] = defaultdict(set)
        for index, sock in enumerate(group):
            sock.setblocking(True)
            sock.settimeout(0.2)
            try:
                while True:
                    _, (host, _) = sock.recvfrom(64)
                    seen[host].add(index)
            except TimeoutError:
                pass
        assert sum(map(len, seen.values())) >= 8
        return seen
    finally:
        for sock in group:
            sock.close()


@pytest.mark.parametrize("processes", [2, 3])
def test_each_exporter_lands_in_one_process_and_they_spread_evenly(processes):
    seen = _deliveries(processes, attach=True)
    assert all(len(indexes) == 1 for indexes in seen.values()), seen
    per_process = defaultdict(int)
    for indexes in seen.values():
        per_process[next(iter(indexes))] += 1
    assert len(seen) == 8 and max(per_process.values()) - min(per_process.values()) <= 1


def test_one_process_needs_no_program():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert balance_by_exporter(sock, 1) is False
    # the program divides by the process count it was built for (instruction 6: ``mod #k``)
    code, _, _, k = struct.unpack_from("=HBBI", exporter_program(4), 6 * 8)
    assert (code, k) == (MOD_K, 4)
