"""Addresses as numbers: 16-byte flow addresses <-> UInt128 keys <-> text, and address scopes.

Flow records carry addresses as 16-byte big-endian binary (IPv4 as IPv4-mapped IPv6, see
``ingest/schema.py``). Enrichment works on a ``UInt128`` *key* per address instead: Polars hashes,
joins and compares it far faster than binary, and CIDR membership becomes a range test.

Everything here is vectorized over a Polars Series; only IPv6 text formatting falls back to Python,
once per distinct IPv6 address (RFC 5952 zero compression is not worth re-implementing in Polars).
"""

from __future__ import annotations

import ipaddress

import polars as pl

KEY = pl.UInt128
V4_BASE = 0xFFFF_0000_0000  # ::ffff:0.0.0.0, where IPv4-mapped addresses start
V4_END = V4_BASE + 0xFFFF_FFFF

# Scope labels. Only 'public' addresses are looked up in GeoIP; reverse DNS covers the scopes
# listed in the dns.lookup_scopes setting. Order matters: the first matching network wins.
SCOPE_LABELS = (
    "public",
    "private",
    "shared",
    "loopback",
    "link-local",
    "multicast",
    "broadcast",
    "documentation",
    "unspecified",
    "reserved",
)
SCOPE_DTYPE = pl.Enum(SCOPE_LABELS)
_SCOPE_NETWORKS: tuple[tuple[str, str], ...] = (
    # IPv4 (matched in their IPv4-mapped form)
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "reserved"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared"),  # carrier-grade NAT (RFC 6598)
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),  # benchmarking (RFC 2544)
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    # IPv6
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("100::/64", "reserved"),  # discard-only
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "private"),  # unique local addresses
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")


def network_range(network: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """First and last key of a network; IPv4 networks map into ::ffff:0:0/96."""
    net = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        first, last = first + V4_BASE, last + V4_BASE
    return first, last


def address_key(text: str) -> int:
    """The UInt128 key of one address given as text (raises ValueError when it is not an address)."""
    addr = ipaddress.ip_address(text.strip())
    return int(addr) + V4_BASE if addr.version == 4 else int(addr)


def key_to_text(key: int) -> str:
    """Text of one key, IPv4-mapped keys as dotted quads (the inverse of :func:`address_key`)."""
    if V4_BASE <= key <= V4_END:
        return str(ipaddress.IPv4Address(key - V4_BASE))
    return str(ipaddress.IPv6Address(key))


def to_binary(texts: list[str]) -> pl.Series:
    """16-byte binary addresses (the flow-record form) from text; for tests, benchmarks and fixtures."""
    return pl.Series([address_key(t).to_bytes(16, "big") for t in texts], dtype=pl.Binary)


def keys_of(binary: pl.Expr | str) -> pl.Expr:
    """Expression turning a 16-byte binary address column into UInt128 keys (null when not 16 bytes)."""
    expr = pl.col(binary) if isinstance(binary, str) else binary
    return expr.bin.reinterpret(dtype=KEY, endianness="big")


def key_lit(value: int) -> pl.Expr:
    """A UInt128 literal (Polars will not mix UInt128 columns with Python ints)."""
    return pl.lit(value, dtype=KEY)


def _in_range(key: pl.Expr, first: int, last: int) -> pl.Expr:
    return key.is_between(key_lit(first), key_lit(last))


def is_ipv4(key: pl.Expr) -> pl.Expr:
    return _in_range(key, V4_BASE, V4_END)


def to_text(keys: pl.Series) -> pl.Series:
    """Text form of UInt128 keys: dotted quads for IPv4-mapped keys, RFC 5952 for IPv6."""
    frame = pl.DataFrame({"k": keys.cast(KEY)})
    v4 = (pl.col("k") - key_lit(V4_BASE)).cast(pl.UInt32, strict=False)
    octets = [((v4 // (1 << shift)) % 256).cast(pl.String) for shift in (24, 16, 8, 0)]
    text = frame.select(
        pl.when(is_ipv4(pl.col("k"))).then(pl.concat_str(octets, separator=".")).alias("ip"),
    ).to_series()
    v6_rows = text.is_null() & keys.is_not_null()
    if v6_rows.any():
        v6_keys = keys.filter(v6_rows).to_list()
        v6_text = pl.Series([str(ipaddress.IPv6Address(k)) for k in v6_keys], dtype=pl.String)
        text = text.scatter(v6_rows.arg_true(), v6_text)
    return text.rename(keys.name or "ip")


def scope_of(key: pl.Expr) -> pl.Expr:
    """Expression labelling each key with its scope (see SCOPE_LABELS); null keys stay null."""
    expr = pl.when(key.is_null()).then(pl.lit(None, dtype=pl.String))
    for network, label in _SCOPE_NETWORKS:
        expr = expr.when(_in_range(key, *network_range(network))).then(pl.lit(label))
    expr = expr.when(is_ipv4(key)).then(pl.lit("public"))
    expr = expr.when(_in_range(key, *network_range(_GLOBAL_UNICAST_V6))).then(pl.lit("public"))
    return expr.otherwise(pl.lit("reserved")).cast(SCOPE_DTYPE)


def distinct_index(*columns: pl.Series) -> tuple[pl.Series, list[pl.Series]]:
    """Distinct non-null keys over all ``columns``, and for each column the UInt32 position of each
    row's key in that distinct list (null for null keys).

    Enrichment describes each distinct address once and gathers the description back per row with
    these positions: a gather is several times cheaper than joining wide tables on 15M rows.
    """
    distinct = pl.concat([c.cast(KEY).rename("k") for c in columns]).drop_nulls().unique()
    lookup = pl.DataFrame({"k": distinct, "i": pl.int_range(len(distinct), dtype=pl.UInt32, eager=True)})
    positions = [
        pl.DataFrame({"k": c.cast(KEY)}).join(lookup, on="k", how="left", maintain_order="left")["i"] for c in columns
    ]
    return distinct, positions
