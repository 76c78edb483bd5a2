"""The asset inventory: the operator's description of the estate, and ``flowlens inventory``.

The file is CSV or YAML. Each entry maps an address or CIDR to an asset name, with optional owner,
environment, tags and the services the asset offers (``port/protocol``)::

    network,name,owner,environment,tags,services
    10.0.1.0/24,web-tier,web-team,prod,frontend;public,443/tcp;80/tcp
    10.0.2.53,dns-1,netops,prod,,53/udp;53/tcp

    # YAML: a list, or a mapping with the list under "assets"
    assets:
      - network: 10.0.1.0/24
        name: web-tier
        tags: [frontend, public]
        services: ["443/tcp", {port: 80, protocol: tcp}]

Invalid rows are reported as ``(line_number, message)`` and skipped; the rest loads. Where
networks nest, the most specific entry describes an address (``10.0.2.53`` wins over
``10.0.0.0/16``).

The inventory decides three things in the pipeline: the asset name of an address, whether the
address is *known* (covered by an entry) or merely discovered, and, through the services, which
end of a flow is the server (:meth:`Inventory.server_side`).
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from assets.enrich.addresses import KEY, distinct_index, keys_of, network_range

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "icmpv6": 58, "sctp": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
COLUMNS = ("network", "name", "owner", "environment", "tags", "services")
_NETWORK_ALIASES = ("network", "address", "cidr")
# "443/tcp" or "tcp/443"
_SERVICE = re.compile(
    r"^\s*(?:(?P<port>\d+)\s*/\s*(?P<proto>[A-Za-z0-9]+)|(?P<proto2>[A-Za-z]+)\s*/\s*(?P<port2>\d+))\s*$"
)
_SPLIT = re.compile(r"[;,\s]+")


class InventoryError(ValueError):
    """The inventory file as a whole cannot be read (missing, unknown format, unreadable header)."""


@dataclass(frozen=True)
class InventoryEntry:
    network: Network
    name: str
    owner: str | None = None
    environment: str | None = None
    tags: tuple[str, ...] = ()
    services: tuple[tuple[int, int], ...] = ()  # (port, protocol number)
    line: int = 0

    def services_json(self) -> str:
        return json.dumps([{"port": port, "protocol": proto} for port, proto in self.services])


# --- parsing one entry -------------------------------------------------------------------------
def _text(value: Any, field: str, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"{field} is required")
        return None
    if isinstance(value, list | dict):
        raise ValueError(f"{field} must be text, got {type(value).__name__}")
    text = str(value).strip()
    if any(ch in text for ch in "\r\n\x00\x01"):
        raise ValueError(f"{field} must be a single line")
    return text


def _network(value: Any) -> Network:
    text = _text(value, "network", required=True)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"network {text!r} is not an IP address or CIDR ({exc})") from None
        raise ValueError(f"network {text!r} has host bits set; did you mean {loose}?") from None


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else _SPLIT.split(str(value))
    return tuple(t for t in (_text(item, "tag") for item in items) if t)


def _protocol(text: str) -> int:
    if text.isdigit():
        number = int(text)
        if number > 255:
            raise ValueError(f"protocol number {number} is not 0-255")
        return number
    if text.lower() not in PROTOCOLS:
        raise ValueError(f"unknown protocol {text!r} (use one of {', '.join(PROTOCOLS)} or a number)")
    return PROTOCOLS[text.lower()]


def _service(item: Any) -> tuple[int, int]:
    if isinstance(item, dict):
        port, proto = item.get("port"), item.get("protocol")
        if port is None or proto is None:
            raise ValueError(f"service {item!r} needs both port and protocol")
        port_text, proto_text = str(port).strip(), str(proto).strip()
    else:
        match = _SERVICE.match(str(item))
        if not match:
            raise ValueError(f"service {item!r} is not port/protocol (e.g. 443/tcp)")
        port_text = match["port"] or match["port2"]
        proto_text = match["proto"] or match["proto2"]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"service port {port_text!r} is not 0-65535")
    return int(port_text), _protocol(proto_text)


def _services(value: Any) -> tuple[tuple[int, int], ...]:
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list) else [s for s in re.split(r"[;,\s]+", str(value)) if s]
    return tuple(dict.fromkeys(_service(item) for item in items))


def parse_entry(row: dict[str, Any], line: int) -> InventoryEntry:
    """One entry from a CSV row or YAML mapping; raises ValueError naming the bad field."""
    unknown = set(row) - set(COLUMNS) - set(_NETWORK_ALIASES)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(COLUMNS)}")
    network_key = next((k for k in _NETWORK_ALIASES if row.get(k) not in (None, "")), "network")
    return InventoryEntry(
        network=_network(row.get(network_key)),
        name=_text(row.get("name"), "name", required=True),
        owner=_text(row.get("owner"), "owner"),
        environment=_text(row.get("environment"), "environment"),
        tags=_tags(row.get("tags")),
        services=_services(row.get("services")),
        line=line,
    )


# --- reading files -----------------------------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """Safe YAML loader that records each mapping's line number under the key ``__line__``."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping


def _yaml_rows(text: str, path: Path) -> list[tuple[int, Any]]:
    try:
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise InventoryError(f"inventory {path} is not valid YAML: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("assets")
    if not isinstance(data, list):
        raise InventoryError(f"inventory {path}: expected a list of assets, or a mapping with the list under 'assets'")
    rows = []
    for item in data:
        if isinstance(item, dict):
            rows.append((item.pop("__line__"), item))
        else:
            rows.append((0, item))
    return rows


def _csv_rows(text: str, path: Path) -> list[tuple[int, Any]]:
    lines = [line for line in text.splitlines(keepends=True)]
    reader = csv.reader(lines)
    header_line = 0
    header: list[str] | None = None
    rows = []
    for record in reader:
        if header is None:
            if not record or record[0].lstrip().startswith("#"):
                continue
            header, header_line = [h.strip().lower() for h in record], reader.line_num
            if not set(header) & set(_NETWORK_ALIASES) or "name" not in header:
                raise InventoryError(
                    f"inventory {path} line {header_line}: the header must name at least the columns network "
                    f"and name (allowed: {', '.join(COLUMNS)}), got {', '.join(header)}"
                )
            continue
        if not record or (len(record) == 1 and not record[0].strip()) or record[0].lstrip().startswith("#"):
            continue
        if len(record) > len(header):
            rows.append((reader.line_num, f"{len(record)} columns but the header has {len(header)}"))
            continue
        rows.append((reader.line_num, dict(zip(header, record, strict=False))))
    if header is None:
        raise InventoryError(f"inventory {path} is empty: it needs a header line (network,name,...)")
    return rows


def _read_rows(path: Path) -> list[tuple[int, Any]]:
    if not path.is_file():
        raise InventoryError(f"inventory file {path} does not exist (config enrichment.inventory_file)")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _yaml_rows(text, path)
    if suffix in (".csv", ".txt"):
        return _csv_rows(text, path)
    raise InventoryError(f"inventory {path}: unknown format {suffix!r}; use a .csv, .yaml or .yml file")


def load_inventory(path: str | Path) -> tuple[Inventory, list[tuple[int, str]]]:
    """Read an inventory file: the valid entries, and (line_number, message) for each skipped row."""
    entries: list[InventoryEntry] = []
    errors: list[tuple[int, str]] = []
    seen: dict[Network, int] = {}
    for line, row in _read_rows(Path(path)):
        if isinstance(row, str):
            errors.append((line, row))
            continue
        if not isinstance(row, dict):
            errors.append((line, f"expected a mapping of fields, got {row!r}"))
            continue
        try:
            entry = parse_entry(row, line)
        except ValueError as exc:
            errors.append((line, str(exc)))
            continue
        if entry.network in seen:
            errors.append((line, f"network {entry.network} is already described on line {seen[entry.network]}"))
            continue
        seen[entry.network] = line
        entries.append(entry)
    return Inventory(entries), errors


# --- matching addresses ------------------------------------------------------------------------
def _disjoint_ranges(entries: list[InventoryEntry]) -> list[tuple[int, int, int]]:
    """Flatten nested networks into disjoint (first, last, entry index) ranges, most specific winning.

    CIDR blocks either nest or do not overlap, so one sweep with a stack of open blocks does it.
    """
    blocks = sorted(((*network_range(e.network), i) for i, e in enumerate(entries)), key=lambda b: (b[0], -b[1]))
    out: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int]] = []  # (last, entry index) of the open blocks, innermost on top
    cursor = 0

    def emit(first: int, last: int, index: int) -> None:
        if first <= last:
            out.append((first, last, index))

    for first, last, index in blocks:
        while stack and stack[-1][0] < first:
            top_last, top_index = stack.pop()
            emit(cursor, top_last, top_index)
            cursor = top_last + 1
        if stack:
            emit(cursor, first - 1, stack[-1][1])
        stack.append((last, index))
        cursor = first
    while stack:
        top_last, top_index = stack.pop()
        emit(cursor, top_last, top_index)
        cursor = top_last + 1
    return out


class Inventory:
    """Entries plus the structures that match UInt128 address keys to them, vectorized."""

    def __init__(self, entries: list[InventoryEntry] | None = None) -> None:
        self.entries = list(entries or [])
        ranges = _disjoint_ranges(self.entries)
        self._ranges = pl.DataFrame(
            {
                "first": pl.Series([r[0] for r in ranges], dtype=KEY),
                "last": pl.Series([r[1] for r in ranges], dtype=KEY),
                "entry": pl.Series([r[2] for r in ranges], dtype=pl.UInt32),
            }
        ).sort("first")
        self.names = pl.Series("asset", [e.name for e in self.entries], dtype=pl.String)
        service_keys = [_service_key(i, port, proto) for i, e in enumerate(self.entries) for port, proto in e.services]
        self._service_keys = pl.Series("service", service_keys, dtype=pl.UInt64)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, keys: pl.Series) -> pl.Series:
        """Entry index (UInt32) covering each key, null where no entry does; input order kept."""
        frame = pl.DataFrame({"k": keys.cast(KEY)}).with_row_index("row")
        if self._ranges.is_empty():
            return pl.Series("entry", [None] * len(keys), dtype=pl.UInt32)
        matched = (
            frame.filter(pl.col("k").is_not_null())
            .sort("k")
            .join_asof(self._ranges, left_on="k", right_on="first", strategy="backward")
            .filter(pl.col("k") <= pl.col("last"))
            .select("row", "entry")
        )
        return frame.join(matched, on="row", how="left").sort("row")["entry"]

    def server_side(self, flows: pl.DataFrame) -> pl.Series:
        """+1 where the destination offers (dst_port, protocol) per the inventory, -1 where the source
        offers (src_port, protocol), 0 where neither; when both do, the destination wins (+1).

        ``flows`` has the flow-record columns src_addr, dst_addr, src_port, dst_port, protocol.
        """
        keys = flows.select(src=keys_of("src_addr"), dst=keys_of("dst_addr"))
        distinct, (src_idx, dst_idx) = distinct_index(keys["src"], keys["dst"])
        entries = self.match(distinct)
        frame = flows.select("src_port", "dst_port", "protocol").with_columns(
            src_entry=entries.gather(src_idx), dst_entry=entries.gather(dst_idx)
        )
        offers = self._service_keys.implode()
        hint = frame.select(
            pl.when(_service_key_expr("dst_entry", "dst_port").is_in(offers))
            .then(pl.lit(1, dtype=pl.Int8))
            .when(_service_key_expr("src_entry", "src_port").is_in(offers))
            .then(pl.lit(-1, dtype=pl.Int8))
            .otherwise(pl.lit(0, dtype=pl.Int8))
            .alias("server_side")
        )
        return hint.to_series()

    def frame(self) -> pl.DataFrame:
        """The entries as a table (one row per entry, in entry-index order)."""
        return pl.DataFrame(
            {
                "network": [str(e.network) for e in self.entries],
                "name": [e.name for e in self.entries],
                "owner": [e.owner for e in self.entries],
                "environment": [e.environment for e in self.entries],
                "tags": [list(e.tags) for e in self.entries],
                "services": [e.services_json() for e in self.entries],
                "line": [e.line for e in self.entries],
            },
            schema={
                "network": pl.String,
                "name": pl.String,
                "owner": pl.String,
                "environment": pl.String,
                "tags": pl.List(pl.String),
                "services": pl.String,
                "line": pl.UInt32,
            },
        )


def _service_key(entry: int, port: int, protocol: int) -> int:
    return (entry << 24) | (port << 8) | protocol


def _service_key_expr(entry: str, port: str) -> pl.Expr:
    return (
        pl.col(entry).cast(pl.UInt64) * (1 << 24)
        + pl.col(port).cast(pl.UInt64) * (1 << 8)
        + pl.col("protocol").cast(pl.UInt64)
    )


# --- PostgreSQL ----------------------------------------------------------------------------------
_UPSERT_HOSTS = """
INSERT INTO flowlens.assets (addr, name, owner, environment, tags, known, first_seen, last_seen)
SELECT host(network)::inet, name, owner, environment, tags, true, now(), now()
FROM flowlens.inventory
WHERE masklen(network) = CASE family(network) WHEN 4 THEN 32 ELSE 128 END
ON CONFLICT (addr) DO UPDATE
SET name = EXCLUDED.name, owner = EXCLUDED.owner, environment = EXCLUDED.environment,
    tags = EXCLUDED.tags, known = true
"""
# Assets discovered in traffic take the description of the most specific entry covering them.
_MARK_COVERED = """
UPDATE flowlens.assets a
SET name = m.name, owner = m.owner, environment = m.environment, tags = m.tags, known = true
FROM (
    SELECT DISTINCT ON (s.addr) s.addr, i.name, i.owner, i.environment, i.tags
    FROM flowlens.assets s JOIN flowlens.inventory i ON s.addr <<= i.network
    ORDER BY s.addr, masklen(i.network) DESC
) m
WHERE a.addr = m.addr
"""
_MARK_UNCOVERED = """
UPDATE flowlens.assets a SET known = false
WHERE a.known AND NOT EXISTS (SELECT 1 FROM flowlens.inventory i WHERE a.addr <<= i.network)
"""


def load_into_postgres(dsn: str, inventory: Inventory) -> dict[str, int]:
    """Replace flowlens.inventory with ``inventory`` and bring flowlens.assets in line, in one transaction.

    Single-address entries become assets right away (known, even before traffic shows them);
    assets covered by an entry are marked known with its description; assets no longer covered
    become discovered (known = false).
    """
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM flowlens.inventory")
        with cur.copy("COPY flowlens.inventory (network, name, owner, environment, tags, services) FROM STDIN") as copy:
            for e in inventory.entries:
                copy.write_row((str(e.network), e.name, e.owner, e.environment, list(e.tags), e.services_json()))
        cur.execute(_UPSERT_HOSTS)
        hosts = cur.rowcount
        cur.execute(_MARK_COVERED)
        covered = cur.rowcount
        cur.execute(_MARK_UNCOVERED)
        uncovered = cur.rowcount
    return {
        "entries": len(inventory),
        "host_assets_upserted": hosts,
        "assets_known": covered,
        "assets_unknown": uncovered,
    }


def main(argv: list[str]) -> int:
    """``flowlens inventory [FILE]``: validate the inventory file and load it into PostgreSQL."""
    parser = argparse.ArgumentParser(
        prog="flowlens inventory",
        description="Validate an asset inventory file (CSV or YAML) and load it into flowlens.inventory and assets.",
    )
    parser.add_argument("file", nargs="?", help="CSV or YAML inventory (default: config enrichment.inventory_file)")
    parser.add_argument("--config", help="FlowLens config file (default: $FLOWLENS_CONFIG or ./flowlens.yaml)")
    parser.add_argument("--dsn", help="PostgreSQL conninfo (default: from the config)")
    parser.add_argument("--check", action="store_true", help="only validate the file; do not touch PostgreSQL")
    args = parser.parse_args(argv)

    from ingest.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"flowlens inventory: {exc}", file=sys.stderr)
        return 2
    path = args.file or cfg.enrichment.inventory_file
    if not path:
        print("flowlens inventory: no file given and enrichment.inventory_file is not set", file=sys.stderr)
        return 2
    try:
        inventory, errors = load_inventory(path)
    except InventoryError as exc:
        print(f"flowlens inventory: {exc}", file=sys.stderr)
        return 2
    for line, message in errors:
        print(f"{path}:{line}: {message} (row skipped)", file=sys.stderr)
    print(f"{path}: {len(inventory)} entries valid, {len(errors)} rows skipped")
    if args.check:
        return 1 if errors else 0
    import psycopg

    try:
        counts = load_into_postgres(args.dsn or cfg.postgres.dsn(), inventory)
    except psycopg.Error as exc:
        print(
            f"flowlens inventory: PostgreSQL refused the load: {exc}\n"
            "Is the stack up (flowlens stack up) and migrated (flowlens migrate)?",
            file=sys.stderr,
        )
        return 2
    print("loaded: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 1 if errors else 0
