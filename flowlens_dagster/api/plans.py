"""What a cacheable GET asks for: its cache entry (metric label, key, TTL) and the query that builds it.

The routes (``app.py``) and the fast path (``fast.py``) both turn a request into a :class:`Plan` here,
so a request's cache key and its validation are written once. Every function raises
:class:`~flowlens_dagster.api.errors.ApiError` (400) on bad input, as the routes answer it.

Keys (Redis database 2, or in process in minimal mode): ``topology:full`` and ``topology:<group>|<filters...>``
(``api.topology_ttl_seconds``), ``search:<q>[|filters]`` (``api.search_ttl_seconds``),
``impact:<addr[:port/proto]>:depth-<n>`` (``api.impact_ttl_seconds``), ``asset:<addr>[|filters]``
(``api.asset_ttl_seconds``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flowlens_dagster.api import params, queries
from flowlens_dagster.api.errors import ApiError, bad
from ingest.config import ApiConfig

MAX_DEPTH = 6
DEFAULT_IMPACT_NODES = 1000  # an impact answer a person can read; max_nodes raises it to api.impact_max_nodes


@dataclass(frozen=True)
class Plan:
    cache: str  # metric label of flowlens_redis_cache_hits_total / _misses_total
    key: str
    ttl: int
    query: Callable[..., Awaitable[object]] | None = None  # queries.*(conn, *args); None: the full map
    args: tuple = ()
    trigram: bool = False  # the query takes one more argument: whether pg_trgm is there


def _join(*parts: str) -> str:
    return "&".join(p for p in parts if p)


def offset_cursor(cursor: str | None) -> int:
    key = params.decode_cursor(cursor, 1)
    if key is None:
        return 0
    if not isinstance(key[0], int) or key[0] < 0:
        raise bad("cursor", "is not a cursor this endpoint returned (pass next_cursor of the previous page unchanged)")
    return key[0]


def classify(q: str | None) -> dict:
    """What a search text is: an address, a prefix, an AS number or free text."""
    text = (q or "").strip()
    if not text:
        return {}
    if "/" in text:
        return {"prefix": params.prefix("q", text)}
    try:
        return {"address": params.address("q", text)}
    except ApiError:
        pass
    if text.upper().startswith("AS") and text[2:].isdigit():
        return {"asn": int(text[2:])}
    return {"text": text}


def search(api: ApiConfig, q: str | None, f: params.Filters, limit: int | None, cursor: str | None) -> Plan:
    size = params.limit(limit, 50, api.max_page)
    offset = offset_cursor(cursor)
    query = classify(q)
    if not query and not f.key():
        raise bad("q", "give a search text, address, prefix or AS number, or at least one filter")
    extra = _join(f.key(), f"limit={size}" if limit else "", f"offset={offset}" if offset else "")
    key = f"search:{(q or '').strip()}" + (f"|{extra}" if extra else "")
    return Plan("search", key, api.search_ttl_seconds, queries.search, (query, f, size, offset), trigram=True)


def impact(api: ApiConfig, target: str, depth: int, max_nodes: int | None) -> Plan:
    if not 1 <= depth <= MAX_DEPTH:
        raise bad("depth", f"must be between 1 and {MAX_DEPTH}, got {depth}")
    cap = params.limit(max_nodes, min(DEFAULT_IMPACT_NODES, api.impact_max_nodes), api.impact_max_nodes, "max_nodes")
    addr, port, proto = params.service("target", target)
    ident = addr if port is None else f"{addr}:{port}/{proto}"
    key = f"impact:{ident}:depth-{depth}" + (f"|max_nodes={cap}" if max_nodes else "")
    return Plan("impact", key, api.impact_ttl_seconds, queries.impact, (addr, port, proto, depth, cap))


def topology(
    api: ApiConfig,
    f: params.Filters,
    group: str,
    prefix_len: int | None,
    limit: int | None,
    cursor: str | None,
    with_bytes: bool = False,
) -> Plan:
    """The full map (``topology:full``, no query: the route builds it) or one filtered page."""
    if group not in params.GROUPS:
        raise bad("group", f"must be one of {', '.join(params.GROUPS)}, got {group!r}")
    if prefix_len is not None and not 0 <= prefix_len <= 128:
        raise bad("prefix_len", f"must be between 0 and 128, got {prefix_len}")
    size = params.limit(limit, 1000 if group == "address" else api.max_page, api.max_page)
    if group == "subnet" and prefix_len is None and not f.key() and cursor is None and limit is None:
        return Plan("topology", "topology:full", api.topology_ttl_seconds)
    page = _join(f.key(), f"limit={size}", f"cursor={cursor}" if cursor else "")
    if group == "address":
        args = (f, size, params.decode_cursor(cursor, 4))
        return Plan("topology", f"topology:address|{page}", api.topology_ttl_seconds, queries.topology_addresses, args)
    v4 = v6 = prefix_len
    if prefix_len is not None and prefix_len > 32 and group == "subnet":
        v4 = 32
    v4, v6 = v4 or api.full_topology_prefix_v4, v6 or api.full_topology_prefix_v6
    subnet = f"prefix_len={v4},{v6}" if group == "subnet" else ""
    key = f"topology:{group}|{_join(page, subnet, 'bytes' if with_bytes else '')}"
    args = (f, group, size, offset_cursor(cursor), v4, v6, with_bytes)
    return Plan("topology", key, api.topology_ttl_seconds, queries.topology_grouped, args)


def asset(api: ApiConfig, addr: str, f: params.Filters, limit: int | None) -> Plan:
    address = params.address("addr", addr)
    size = params.limit(limit, 200, api.max_page)
    key = f"asset:{address}|{_join(f.key(), f'limit={size}')}"
    return Plan("asset", key, api.asset_ttl_seconds, queries.asset_detail, (address, f, size))
