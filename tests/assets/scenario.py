"""A small, fully known network for pipeline tests: flows per window and what the tables must hold.

The expected rows are computed here with plain Python (dicts, the port rule written out), not
with the pipeline's Polars code, so the tests compare two independent implementations.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from assets.addresses import addr_bytes
from ingest.schema import FLOW_SCHEMA

WINDOW = timedelta(minutes=5)

# window index -> list of (client, client_port, server, server_port, protocol, reply?) conversations
CONVERSATIONS: dict[int, list[tuple[str, int, str, int, int, bool]]] = {
    0: [
        ("10.1.0.1", 50001, "10.2.0.1", 443, 6, True),
        ("10.1.0.2", 50002, "10.2.0.1", 443, 6, False),
        ("10.1.0.1", 40000, "10.2.0.53", 53, 17, True),
        ("2001:db8::10", 50000, "2001:db8::1", 443, 6, True),
    ],
    1: [
        ("10.1.0.1", 50011, "10.2.0.1", 443, 6, True),
        ("10.1.0.3", 50003, "10.2.0.1", 443, 6, False),
    ],
    2: [
        ("10.1.0.3", 50013, "10.2.0.1", 443, 6, True),
    ],
}
GONE_AFTER = 2  # pipeline.dependency_gone_after_windows used by the tests


def base_window(now: datetime | None = None) -> datetime:
    """A window two hours back (well inside the partition set, never the open window)."""
    t = (now or datetime.now(UTC)) - timedelta(hours=2)
    return t.replace(minute=t.minute - t.minute % 5, second=0, microsecond=0)


def land(dsn: str, base: datetime) -> dict[int, list[dict]]:
    """The scenario's flows for windows base .. base+2 written to ``flow_raw``; returns them by window."""
    from ingest.land.postgres import PostgresLanding

    flows = flow_rows(base)
    landing = PostgresLanding(dsn)
    try:
        for rows in flows.values():
            landing.write(batch(rows))
    finally:
        landing.close()
    return flows


def flow_rows(base: datetime, seed: int = 7) -> dict[int, list[dict]]:
    """Raw flow records per window index (several flows per conversation, replies included)."""
    rng = random.Random(seed)
    out: dict[int, list[dict]] = {}
    for index, conversations in CONVERSATIONS.items():
        start = base + index * WINDOW
        rows = []
        for client, cport, server, sport, proto, reply in conversations:
            for _ in range(rng.randint(2, 4)):
                received = start + timedelta(seconds=rng.uniform(1, 299))
                flags = 0x1B if proto == 6 else 0
                rows.append(_flow(received, client, cport, server, sport, proto, flags, rng))
                if reply:
                    rows.append(_flow(received, server, sport, client, cport, proto, flags, rng))
        out[index] = sorted(rows, key=lambda r: r["receive_time"])
    return out


def _flow(received, src, sport, dst, dport, proto, flags, rng) -> dict:
    packets = rng.randint(1, 50)
    return {
        "receive_time": received,
        "exporter": addr_bytes("192.0.2.1"),
        "observation_domain": 1,
        "flow_version": 9,
        "flow_start": received - timedelta(seconds=rng.randint(2, 30)),
        "flow_end": received - timedelta(seconds=1),
        "src_addr": addr_bytes(src),
        "dst_addr": addr_bytes(dst),
        "src_port": sport,
        "dst_port": dport,
        "protocol": proto,
        "tcp_flags": flags,
        "bytes": packets * rng.randint(40, 1500),
        "packets": packets,
        "sampling_rate": 1,
        "input_if": None,
        "output_if": None,
        "src_as": None,
        "dst_as": None,
        "direction": None,
    }


def batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=FLOW_SCHEMA)


def _text(raw: bytes) -> str:
    from assets.addresses import addr_text

    return addr_text(raw)


def expected_flow_stats(base: datetime, flows: dict[int, list[dict]]) -> list[tuple]:
    """(window, client, server, port, proto, bytes, packets, flows, first_seen, last_seen), sorted."""
    acc: dict[tuple, list] = {}
    for index, rows in flows.items():
        window = base + index * WINDOW
        for r in rows:
            # every scenario flow has ports on both sides: the lower (well-known) port is the server
            if r["dst_port"] < r["src_port"]:
                client, server, port = r["src_addr"], r["dst_addr"], r["dst_port"]
            else:
                client, server, port = r["dst_addr"], r["src_addr"], r["src_port"]
            key = (window, _text(client), _text(server), port, r["protocol"])
            entry = acc.setdefault(key, [0, 0, 0, r["flow_start"], r["flow_end"]])
            entry[0] += r["bytes"]
            entry[1] += r["packets"]
            entry[2] += 1
            entry[3] = min(entry[3], r["flow_start"])
            entry[4] = max(entry[4], r["flow_end"])
    return sorted((*k, *v) for k, v in acc.items())


def expected_topology(base: datetime, stats: list[tuple]) -> tuple[dict, dict, set]:
    """(assets: addr -> (first_window, last_window), dependencies: edge -> (first_window, last_window), changes)."""
    assets: dict[str, list] = {}
    deps: dict[tuple, list] = {}
    windows_of: dict[tuple, set] = defaultdict(set)
    for window, client, server, port, proto, *_ in stats:
        for addr in (client, server):
            a = assets.setdefault(addr, [window, window])
            a[0], a[1] = min(a[0], window), max(a[1], window)
        edge = (client, server, port, proto)
        d = deps.setdefault(edge, [window, window])
        d[0], d[1] = min(d[0], window), max(d[1], window)
        windows_of[edge].add(window)
    changes = set()
    for addr, (first, _) in assets.items():
        changes.add((first, "new_asset", addr))
    for (client, server, port, proto), (first, _) in deps.items():
        changes.add((first, "new_dependency", f"{client} -> {server}:{port}/{proto}"))
    last_index = max(CONVERSATIONS)
    for edge, seen in windows_of.items():
        for index in range(GONE_AFTER, last_index + 1):
            window = base + index * WINDOW
            before = window - GONE_AFTER * WINDOW
            later = {before + i * WINDOW for i in range(1, GONE_AFTER + 1)}
            if before in seen and not (seen & later):
                client, server, port, proto = edge
                changes.add((window, "dependency_gone", f"{client} -> {server}:{port}/{proto}"))
    return {k: tuple(v) for k, v in assets.items()}, {k: tuple(v) for k, v in deps.items()}, changes
