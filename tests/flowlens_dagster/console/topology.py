"""A small known topology for the console's browser tests, written straight into the pipeline's tables.

Five /24 subnets, each one tier of a small enterprise (office clients -> web 443 -> app 8080 ->
database 5432, everything -> DNS 53/udp), with owners, environments and tags as the inventory
would give them, six windows of ``flow_stats`` (the traffic chart) and one change per asset.
The expected answers below follow from these rows, not from the code under test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

WINDOW = timedelta(minutes=5)
TCP, UDP = 6, 17

# addr -> (name, owner, environment, tags, hostname)
ASSETS: dict[str, tuple[str, str, str, list[str], str]] = {
    **{f"10.10.4.{i}": (f"laptop-{i}", "it", "corp", ["office"], f"laptop-{i}.corp.example") for i in range(1, 5)},
    "10.10.1.10": ("web-1", "web-team", "prod", ["frontend"], "web-1.prod.example"),
    "10.10.1.11": ("web-2", "web-team", "prod", ["frontend"], "web-2.prod.example"),
    "10.10.2.20": ("app-1", "app-team", "prod", ["backend"], "app-1.prod.example"),
    "10.10.3.30": ("db-1", "dba", "prod", ["database"], "db-1.prod.example"),
    "10.10.5.53": ("dns-1", "netops", "infra", ["dns"], "dns-1.infra.example"),
}
# addr -> AS number (GeoIP would give them): the servers in one AS, the office in another, DNS in a third
ASNS = {
    addr: 64501 if addr.startswith("10.10.4.") else 64502 if addr.startswith("10.10.5.") else 64500 for addr in ASSETS
}
OFFICE = [f"10.10.4.{i}" for i in range(1, 5)]
WEB = ["10.10.1.10", "10.10.1.11"]
APP, DB, DNS = "10.10.2.20", "10.10.3.30", "10.10.5.53"

# (client, server, port, protocol)
DEPENDENCIES: list[tuple[str, str, int, int]] = [
    *[(c, w, 443, TCP) for c in OFFICE for w in WEB],
    *[(w, APP, 8080, TCP) for w in WEB],
    (APP, DB, 5432, TCP),
    *[(c, DNS, 53, UDP) for c in [*OFFICE, *WEB, APP]],
]

SUBNETS = ["10.10.1.0/24", "10.10.2.0/24", "10.10.3.0/24", "10.10.4.0/24", "10.10.5.0/24"]
OWNERS = sorted({a[1] for a in ASSETS.values()})
ENVIRONMENTS = sorted({a[2] for a in ASSETS.values()})
# What breaks when the database goes: the app (1 hop), the web servers (2), the office (3).
DB_DEPENDENTS = {1: {APP}, 2: {APP, *WEB}, 3: {APP, *WEB, *OFFICE}}
APP_CLIENTS = set(WEB)
APP_SERVERS = {DB, DNS}
DNS_CLIENTS = {*OFFICE, *WEB, APP}
WINDOWS = 6


def windows(now: datetime | None = None) -> list[datetime]:
    """The last WINDOWS complete 5-minute windows before ``now``, oldest first."""
    now = now or datetime.now(UTC)
    last = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5) - WINDOW
    return [last - WINDOW * i for i in reversed(range(WINDOWS))]


def window_bytes(dep_index: int, window_index: int) -> int:
    return 1_000_000 * (dep_index + 1) * (1 + (window_index * 7) % 5)


def load(dsn: str) -> None:
    """Write the topology into empty tables (the caller truncates them first)."""
    spans = windows()
    first, last = spans[0], spans[-1] + WINDOW
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT flowlens.ensure_day_partitions('flowlens.flow_stats', %s::date, 2)", (first - timedelta(days=1),)
        )
        cur.executemany(
            """INSERT INTO flowlens.assets (addr, name, owner, environment, tags, known, hostname,
                                           first_seen, last_seen, first_window, last_window, asn)
               VALUES (%s, %s, %s, %s, %s, true, %s, %s, %s, %s, %s, %s)""",
            [(addr, *attrs, first, last, spans[0], spans[-1], ASNS[addr]) for addr, attrs in ASSETS.items()],
        )
        cur.executemany(
            """INSERT INTO flowlens.dependencies (client_addr, server_addr, server_port, protocol,
                                                 first_seen, last_seen, first_window, last_window)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            [(*dep, first, last, spans[0], spans[-1]) for dep in DEPENDENCIES],
        )
        cur.executemany(
            """INSERT INTO flowlens.flow_stats (window_start, client_addr, server_addr, server_port, protocol,
                                               bytes, packets, flows, first_seen, last_seen)
               VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s, %s)""",
            [
                (w, *dep, window_bytes(d, i), window_bytes(d, i) // 1000, w, w + WINDOW)
                for d, dep in enumerate(DEPENDENCIES)
                for i, w in enumerate(spans)
            ],
        )
        cur.executemany(
            """INSERT INTO flowlens.changes (window_start, kind, subject, addr, details)
               VALUES (%s, 'new_asset', %s, %s, '{}')""",
            [(spans[0], addr, addr) for addr in ASSETS],
        )


def subnet(addr: str) -> str:
    return addr.rsplit(".", 1)[0] + ".0/24"


def subnet_pairs(protocol: int | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    """(client subnet, server subnet) -> (bytes of all windows, dependencies), from the rows above."""
    pairs: dict[tuple[str, str], tuple[int, int]] = {}
    for d, (client, server, _port, proto) in enumerate(DEPENDENCIES):
        if protocol is not None and proto != protocol:
            continue
        key = (subnet(client), subnet(server))
        total, count = pairs.get(key, (0, 0))
        pairs[key] = (total + sum(window_bytes(d, i) for i in range(WINDOWS)), count + 1)
    return pairs


def group_of(grouping: str, addr: str) -> str:
    """The map group of an address, by the rows above (subnet /24, ``AS<n>``, owner, environment)."""
    _name, owner, environment, _tags, _host = ASSETS[addr]
    return {"subnet": subnet(addr), "asn": f"AS{ASNS[addr]}", "owner": owner, "environment": environment}[grouping]
