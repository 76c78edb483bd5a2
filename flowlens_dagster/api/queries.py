"""The API's reads from PostgreSQL: topology, search, asset detail, impact, change history.

Each function takes an open async psycopg connection (dict rows) and returns plain JSON-ready data.
Addresses leave PostgreSQL as text (``host()``), so clients see ``10.0.0.5``, never ``10.0.0.5/32``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection

from flowlens_dagster.api import group_bytes
from flowlens_dagster.api.errors import ApiError, bad
from flowlens_dagster.api.params import Filters, encode_cursor

NODE_COLUMNS = """host(a.addr) AS addr, a.name, a.hostname, a.owner, a.environment, a.tags, a.known,
                  a.country, a.city, a.asn, a.as_org, a.first_seen, a.last_seen"""
EDGE_COLUMNS = """host(d.client_addr) AS client, host(d.server_addr) AS server, d.server_port AS port,
                  d.protocol, d.first_seen, d.last_seen"""
EDGE_KEY = "(d.client_addr, d.server_addr, d.server_port, d.protocol)"
EDGE_ORDER = EDGE_KEY[1:-1]  # columns, not a row value: the primary key's order serves them
ASSET_FIELDS = {"owner": "owner", "environment": "environment", "asn": "asn", "country": "country"}
GROUP_EXPR = {
    "subnet": "network(set_masklen({a}, CASE WHEN family({a}) = 4 THEN %(v4)s ELSE %(v6)s END))::text",
    "asn": "coalesce('AS' || {t}.asn, 'unknown')",
    "owner": "coalesce({t}.owner, '(none)')",
    "environment": "coalesce({t}.environment, '(none)')",
}
# bytes of dependency d in the range (``{span}``: conditions on fs.window_start)
EDGE_BYTES = f"""(SELECT coalesce(sum(fs.bytes), 0)::bigint FROM flowlens.flow_stats fs
                  WHERE (fs.client_addr, fs.server_addr, fs.server_port, fs.protocol) = {EDGE_KEY}{{span}})"""
GROUP_KEYS = ("owner", "environment", "asn")  # what places an impact result in the map's groups
GROUP_FIELDS = ", ".join(GROUP_KEYS)
SERIES_FINE_SPAN = timedelta(days=2)  # longer ranges read the hourly rollup


def _asset_match(alias: str, f: Filters, params: dict) -> list[str]:
    """Conditions on one asset row (alias) for the inventory/GeoIP filters."""
    conds = []
    for name, column in ASSET_FIELDS.items():
        value = getattr(f, name)
        if value is not None:
            params[name] = value
            conds.append(f"{alias}.{column} = %({name})s")
    if f.tag is not None:
        params["tag"] = f.tag
        conds.append(f"%(tag)s = ANY ({alias}.tags)")
    return conds


def _basic_conditions(f: Filters, params: dict, alias: str, since: str, until: str, addrs: list[str]) -> list[str]:
    """Time range (``since`` / ``until``: the columns compared), prefix (any of ``addrs``), port, protocol."""
    conds = []
    for name, value, cond in (
        ("since", f.since, f"{since} >= %(since)s"),
        ("until", f.until, f"{until} < %(until)s"),
        ("port", f.port, f"{alias}.server_port = %(port)s"),
        ("protocol", f.protocol, f"{alias}.protocol = %(protocol)s"),
    ):
        if value is not None:
            params[name] = value
            conds.append(cond)
    if f.prefix is not None:
        params["prefix"] = f.prefix
        conds.append("(" + " OR ".join(f"{a} <<= %(prefix)s::inet" for a in addrs) + ")")
    return conds


def _asset_joins(alias: str) -> str:
    """Both ends of the rows ``alias`` (client_addr, server_addr) as assets ``c`` and ``s``."""
    return "".join(
        f" JOIN flowlens.assets {a} ON {a}.addr = {alias}.{end}_addr" for a, end in (("c", "client"), ("s", "server"))
    )


def _pair_conditions(f: Filters, params: dict, alias: str, since: str, until: str) -> tuple[str, list[str]]:
    """(joins, conditions) selecting rows ``alias`` of client -> server:port/protocol (dependencies or
    traffic) by the filters; asset filters match either end."""
    joins = ""
    conds = _basic_conditions(f, params, alias, since, until, [f"{alias}.client_addr", f"{alias}.server_addr"])
    if f.asset_filters:
        joins = _asset_joins(alias)
        client, server = _asset_match("c", f, params), _asset_match("s", f, params)
        conds.append(f"(({' AND '.join(client)}) OR ({' AND '.join(server)}))")
    return joins, conds


def edge_conditions(f: Filters, params: dict) -> tuple[str, list[str]]:
    """(joins, conditions) selecting dependencies ``d`` by the filters."""
    joins, conds = _pair_conditions(f, params, "d", "d.last_seen", "d.first_seen")
    if f.min_bytes is not None:
        params["min_bytes"] = f.min_bytes
        conds.append(EDGE_BYTES.format(span=_span_conditions(f, params, "fs.window_start")) + " >= %(min_bytes)s")
    return joins, conds


def _where(conds: list[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


async def _rows(conn: AsyncConnection, sql: str, params: dict | tuple) -> list[dict]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


# --- topology ------------------------------------------------------------------------------------
async def topology_addresses(conn: AsyncConnection, f: Filters, limit: int, cursor: list | None) -> dict:
    """Address-level graph: up to ``limit`` edges in key order after ``cursor``, and their end nodes."""
    params: dict = {"limit": limit + 1}
    joins, conds = edge_conditions(replace(f, prefix=None), params)
    if cursor is not None:
        params.update(c0=cursor[0], c1=cursor[1], c2=cursor[2], c3=cursor[3])
        conds.append(f"{EDGE_KEY} > (%(c0)s::inet, %(c1)s::inet, %(c2)s, %(c3)s::smallint)")
    if f.prefix is None:
        sql = f"SELECT {EDGE_COLUMNS} FROM flowlens.dependencies d{joins}{_where(conds)}"
        sql += f" ORDER BY {EDGE_ORDER} LIMIT %(limit)s"
    else:
        params["prefix"] = f.prefix
        sql = _prefix_edges(joins, conds)
    edges = await _rows(conn, sql, params)
    more = len(edges) > limit
    edges = edges[:limit]
    addrs = sorted({e["client"] for e in edges} | {e["server"] for e in edges})
    nodes = await _rows(
        conn, f"SELECT {NODE_COLUMNS} FROM flowlens.assets a WHERE a.addr = ANY (%s::inet[]) ORDER BY a.addr", (addrs,)
    )
    last = edges[-1] if edges else None
    next_cursor = (
        encode_cursor([last["client"], last["server"], last["port"], last["protocol"]]) if more and last else None
    )
    return {"level": "address", "nodes": nodes, "edges": edges, "next_cursor": next_cursor}


def _prefix_edges(joins: str, conds: list[str]) -> str:
    """Edges with either end in ``%(prefix)s``, in key order: the first ``%(limit)s`` keys with the client
    in the prefix (the primary key's range, read in order and stopped at the limit) merged with those
    with the server in it (``dependencies_server_clients``, an index-only range that holds the whole
    key), then the rows of those keys only. One ``client OR server`` condition read and sorted every
    matching row (~35,000 for a popular /24 of the bench's map: 340 ms)."""
    key = EDGE_ORDER.replace("d.", "")
    branches = [
        f"(SELECT {key} FROM flowlens.dependencies d{joins}"
        f"{_where([*conds, f'd.{end}_addr <<= %(prefix)s::inet'])} ORDER BY {EDGE_ORDER} LIMIT %(limit)s)"
        for end in ("client", "server")
    ]
    return f"""SELECT {EDGE_COLUMNS}
               FROM ({" UNION ".join(branches)} ORDER BY {key} LIMIT %(limit)s) k
               JOIN flowlens.dependencies d USING ({key})
               ORDER BY {EDGE_ORDER}"""


async def topology_grouped(
    conn: AsyncConnection, f: Filters, group: str, limit: int, offset: int, v4: int, v6: int, with_bytes: bool = False
) -> dict:
    """Groups (subnet, ASN, owner, environment) as nodes; edges count the dependencies between two groups.

    ``with_bytes``: edges also carry ``bytes``, the traffic between the two groups in the time range (all
    time without one) under the same filters, summed from the rollups and ``flow_stats``
    (``group_bytes``). It reads every traffic row of the range, so it costs more than the count."""
    params: dict = {"limit": limit + 1, "offset": offset, "v4": v4, "v6": v6}
    joins, conds = edge_conditions(f, params)
    src, dst, joins = _group_ends(group, "d", joins)
    weight, traffic = "", ""
    if with_bytes:
        parts = await group_bytes.traffic_spans(conn, f.since, f.until)
        weight = ", coalesce(traffic.bytes, 0)::bigint AS bytes"
        traffic = f" LEFT JOIN ({_group_traffic(f, group, parts, params)}) traffic USING (source, target)"
    sql = f"""WITH deps AS (
                  SELECT {src} AS source, {dst} AS target, count(*) AS dependencies,
                         min(d.first_seen) AS first_seen, max(d.last_seen) AS last_seen
                  FROM flowlens.dependencies d{joins}{_where(conds)} GROUP BY 1, 2)
              SELECT deps.*{weight} FROM deps{traffic}
              ORDER BY dependencies DESC, source, target LIMIT %(limit)s OFFSET %(offset)s"""
    edges = await _rows(conn, sql, params)
    more = len(edges) > limit
    edges = edges[:limit]
    node_expr = GROUP_EXPR[group].format(a="a.addr", t="a")
    node_params: dict = {"v4": v4, "v6": v6}
    node_conds = _asset_match("a", f, node_params)
    if f.prefix is not None:
        node_params["prefix"] = f.prefix
        node_conds.append("a.addr <<= %(prefix)s::inet")
    nodes = await _rows(
        conn,
        f"SELECT {node_expr} AS id, count(*) AS assets FROM flowlens.assets a{_where(node_conds)} GROUP BY 1 ORDER BY 1",  # noqa: E501
        node_params,
    )
    linked = {e["source"] for e in edges} | {e["target"] for e in edges}
    nodes = [n for n in nodes if n["id"] in linked] if (conds or f.asset_filters) else nodes
    next_cursor = encode_cursor([offset + limit]) if more else None
    return {"level": group, "nodes": nodes, "edges": edges, "next_cursor": next_cursor}


def _group_ends(group: str, alias: str, joins: str) -> tuple[str, str, str]:
    """(source group, target group, joins) of the rows ``alias`` (client_addr, server_addr, ...)."""
    if group == "subnet":
        return (
            GROUP_EXPR[group].format(a=f"{alias}.client_addr"),
            GROUP_EXPR[group].format(a=f"{alias}.server_addr"),
            joins,
        )
    if not joins:
        joins = _asset_joins(alias)
    return GROUP_EXPR[group].format(t="c"), GROUP_EXPR[group].format(t="s"), joins


def _group_traffic(f: Filters, group: str, parts: list[group_bytes.Span], params: dict) -> str:
    """Bytes per (source, target) group pair of the traffic rows the filters select (time by ``parts``)."""
    if not parts:  # an empty range
        return "SELECT NULL::text AS source, NULL::text AS target, NULL::bigint AS bytes WHERE false"
    joins, conds = _pair_conditions(replace(f, since=None, until=None), params, "t", "", "")
    src, dst, joins = _group_ends(group, "t", joins)
    return f"""SELECT {src} AS source, {dst} AS target, sum(t.bytes) AS bytes
               FROM ({group_bytes.traffic_rows(parts, params)}) t{joins}{_where(conds)} GROUP BY 1, 2"""


# --- search --------------------------------------------------------------------------------------
def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def search(conn: AsyncConnection, q: dict, f: Filters, limit: int, offset: int, trigram: bool) -> dict:
    """Assets matching ``q`` (``{"address"|"prefix"|"asn"|"text": value}``) and the filters, best first."""
    params: dict = {"limit": limit + 1, "offset": offset}
    conds = _asset_match("a", f, params)
    rank = "0"
    if f.prefix is not None:
        params["prefix"] = f.prefix
        conds.append("a.addr <<= %(prefix)s::inet")
    if "address" in q:
        params["q"] = q["address"]
        conds.append("a.addr = %(q)s::inet")
    elif "prefix" in q:
        params["q"] = q["prefix"]
        conds.append("a.addr <<= %(q)s::inet")
    elif "asn" in q:
        params["q"] = q["asn"]
        conds.append("a.asn = %(q)s")
    elif "text" in q:
        params.update(q=q["text"], like=_like(q["text"]))
        conds.append(
            "(a.hostname ILIKE %(like)s OR a.name ILIKE %(like)s OR a.owner = %(q)s OR a.tags @> ARRAY[%(q)s])"
        )
        exact = "(CASE WHEN lower(a.hostname) = lower(%(q)s) OR lower(a.name) = lower(%(q)s) THEN 1 ELSE 0 END)"
        similar = (
            "greatest(public.similarity(coalesce(a.hostname, ''), %(q)s),"
            " public.similarity(coalesce(a.name, ''), %(q)s))"
            if trigram
            else "0"
        )
        rank = f"{exact} + {similar}"
    sql = f"""SELECT {NODE_COLUMNS}, round(({rank})::numeric, 3)::float AS score
              FROM flowlens.assets a{_where(conds)}
              ORDER BY score DESC, a.addr LIMIT %(limit)s OFFSET %(offset)s"""
    rows = await _rows(conn, sql, params)
    more = len(rows) > limit
    return {"results": rows[:limit], "next_cursor": encode_cursor([offset + limit]) if more else None}


# --- asset detail --------------------------------------------------------------------------------
async def asset_detail(conn: AsyncConnection, addr: str, f: Filters, limit: int) -> dict:
    """One asset, its dependencies in (clients) and out (servers) with bytes in the range, and its series."""
    rows = await _rows(conn, f"SELECT {NODE_COLUMNS} FROM flowlens.assets a WHERE a.addr = %s::inet", (addr,))
    if not rows:
        raise ApiError(404, f"addr: no asset {addr} (search with GET /api/v1/search?q=...)", "addr")
    params: dict = {"addr": addr, "limit": limit}
    joins, conds = edge_conditions(Filters(since=f.since, until=f.until, port=f.port, protocol=f.protocol), params)
    span = _span_conditions(f, params, "fs.window_start")
    result = {"asset": rows[0]}
    for direction, mine, other in (("in", "server", "client"), ("out", "client", "server")):
        sql = f"""SELECT host(d.{other}_addr) AS {other}, d.server_port AS port, d.protocol, d.first_seen,
                         d.last_seen, {EDGE_BYTES.format(span=span)} AS bytes
                  FROM flowlens.dependencies d{joins}
                  WHERE d.{mine}_addr = %(addr)s::inet{"".join(" AND " + c for c in conds)}
                  ORDER BY d.{other}_addr, d.server_port, d.protocol LIMIT %(limit)s"""
        count_sql = f"SELECT count(*) AS n FROM flowlens.dependencies d WHERE d.{mine}_addr = %(addr)s::inet"
        result[f"dependencies_{direction}"] = await _rows(conn, sql, params)
        result[f"dependencies_{direction}_total"] = (await _rows(conn, count_sql, params))[0]["n"]
    result["series"] = await _series(conn, addr, f)
    return result


def _span_conditions(f: Filters, params: dict, column: str) -> str:
    text = ""
    if f.since is not None:
        params["since"] = f.since
        text += f" AND {column} >= %(since)s"
    if f.until is not None:
        params["until"] = f.until
        text += f" AND {column} < %(until)s"
    return text


async def _series(conn: AsyncConnection, addr: str, f: Filters) -> dict:
    """Traffic to and from ``addr``: 5-minute points from flow_stats, hourly from the rollup for long spans."""
    if f.since is None:  # default: the last day
        f = Filters(since=(f.until or datetime.now(UTC)) - timedelta(days=1), until=f.until)
    coarse = (f.until or datetime.now(UTC)) - f.since > SERIES_FINE_SPAN
    table, column, step = (
        ("flowlens.flow_stats_hourly", "hour_start", "1h") if coarse else ("flowlens.flow_stats", "window_start", "5m")
    )
    params: dict = {"addr": addr}
    sql = f"""SELECT {column} AS t, sum(bytes)::bigint AS bytes, sum(packets)::bigint AS packets,
                     sum(flows)::bigint AS flows
              FROM ({_series_rows(table, column, f, params)}) s
              GROUP BY 1 ORDER BY 1"""
    return {"step": step, "points": await _rows(conn, sql, params)}


def _series_rows(table: str, column: str, f: Filters, params: dict) -> str:
    """The rows of ``addr``'s traffic, each once: as client, then as server (not also client).

    flow_stats has no index by server address (sql/036: a random-order index would halve the window
    loads' COPY rate), so its server side is found through ``dependencies``' server index, one
    probe of flow_stats' dependency index per edge; the hourly rollup has its own server index (035).
    """
    span, server_span = _span_conditions(f, params, column), _span_conditions(f, params, f"fs.{column}")
    if table != "flowlens.flow_stats":
        return f"""SELECT {column}, bytes, packets, flows FROM {table}
                   WHERE (client_addr = %(addr)s::inet OR server_addr = %(addr)s::inet){span}"""
    return f"""SELECT {column}, bytes, packets, flows FROM {table} WHERE client_addr = %(addr)s::inet{span}
               UNION ALL
               SELECT fs.{column}, fs.bytes, fs.packets, fs.flows
               FROM flowlens.dependencies d JOIN {table} fs
                 ON (fs.client_addr, fs.server_addr, fs.server_port, fs.protocol)
                  = (d.client_addr, d.server_addr, d.server_port, d.protocol)
               WHERE d.server_addr = %(addr)s::inet AND d.client_addr <> %(addr)s::inet{server_span}"""


# --- impact --------------------------------------------------------------------------------------
# One level of the walk: the clients of the frontier not seen yet, each once with its smallest edge.
# The candidates come from the server-side index first (MATERIALIZED): with a LIMIT, the planner
# would otherwise walk the primary key in client order, through most of a large table.
LEVEL_SQL = """WITH candidates AS MATERIALIZED (
                   SELECT d.client_addr, d.server_addr, d.server_port, d.protocol FROM flowlens.dependencies d
                   WHERE d.server_addr = ANY (%(frontier)s::inet[]){service}
               )
               SELECT DISTINCT ON (c.client_addr) host(c.client_addr) AS client, host(c.server_addr) AS server,
                      c.server_port AS port, c.protocol
               FROM candidates c
               WHERE NOT EXISTS (SELECT 1 FROM unnest(%(seen)s::inet[]) AS s(a) WHERE s.a = c.client_addr)
               ORDER BY c.client_addr, c.server_addr, c.server_port, c.protocol
               LIMIT %(cap)s"""


async def impact(
    conn: AsyncConnection, addr: str, port: int | None, proto: int | None, depth: int, max_nodes: int
) -> dict:
    """Who is affected if ``addr`` (or only its service ``port/proto``) goes away, breadth first to ``depth``.

    Each affected address appears once, at its smallest depth, with one shortest path from the target
    (cycles are cut by the visited set). Past ``max_nodes`` the walk stops and says so.
    """
    known = await _rows(conn, f"SELECT {GROUP_FIELDS} FROM flowlens.assets WHERE addr = %s::inet", (addr,))
    if not known:
        raise ApiError(404, f"target: no asset {addr} (search with GET /api/v1/search?q=...)", "target")
    parent: dict[str, tuple | None] = {addr: None}
    order: list[str] = []
    frontier, truncated_at = [addr], None
    for level in range(1, depth + 1):
        service = " AND d.server_port = %(port)s AND d.protocol = %(proto)s" if level == 1 and port is not None else ""
        seen = list(parent)
        params = {"frontier": frontier, "seen": seen, "port": port, "proto": proto, "cap": max_nodes - len(order) + 1}
        rows = await _rows(conn, LEVEL_SQL.format(service=service), params)
        frontier = []
        for row in rows:
            if row["client"] in parent:
                continue
            if len(order) >= max_nodes:
                truncated_at = level
                break
            parent[row["client"]] = (row["server"], row["port"], row["protocol"], level)
            order.append(row["client"])
            frontier.append(row["client"])
        if truncated_at or not frontier:
            break
    names = await _rows(
        conn,
        f"SELECT host(addr) AS addr, name, hostname, {GROUP_FIELDS} FROM flowlens.assets WHERE addr = ANY (%s::inet[])",
        (order,),
    )
    named = {n["addr"]: n for n in names}
    affected = []
    for client in order:
        server, svc_port, svc_proto, level = parent[client]
        path, hop = [client], client
        while parent[hop] is not None:
            hop = parent[hop][0]
            path.append(hop)
        info = named.get(client, {})
        affected.append({
            "addr": client, "name": info.get("name"), "hostname": info.get("hostname"),
            **{k: info.get(k) for k in GROUP_KEYS}, "depth": level,
            "via": {"server": server, "port": svc_port, "protocol": svc_proto}, "path": path[::-1],
        })  # fmt: skip
    by_depth: dict[str, int] = {}
    for item in affected:
        by_depth[str(item["depth"])] = by_depth.get(str(item["depth"]), 0) + 1
    message = (
        f"fan-out limit of {max_nodes} affected assets reached at depth {truncated_at}; the list is incomplete "
        f"(raise max_nodes up to the server's limit, lower depth, or target a service addr:port/proto)"
        if truncated_at
        else None
    )
    return {
        "target": {"addr": addr, "port": port, "protocol": proto, **known[0]},
        "depth": depth,
        "count": len(affected),
        "by_depth": by_depth,
        "truncated": truncated_at is not None,
        "message": message,
        "affected": affected,
    }


# --- changes -------------------------------------------------------------------------------------
CHANGE_COLUMNS = """c.id, c.window_start, c.kind, c.subject, host(c.addr) AS addr, host(c.client_addr) AS client,
                    host(c.server_addr) AS server, c.server_port, c.protocol, c.details, c.detected_at"""
CHANGE_KINDS = ("new_asset", "new_dependency", "dependency_gone")


def change_conditions(f: Filters, kinds: list[str] | None, params: dict) -> list[str]:
    conds = _basic_conditions(
        f, params, "c", "c.window_start", "c.window_start", ["c.addr", "c.client_addr", "c.server_addr"]
    )
    if kinds:
        unknown = [k for k in kinds if k not in CHANGE_KINDS]
        if unknown:
            raise bad("kind", f"must be one or more of {', '.join(CHANGE_KINDS)}, got {','.join(unknown)!r}")
        params["kinds"] = kinds
        conds.append("c.kind = ANY (%(kinds)s)")
    return conds


async def changes(conn: AsyncConnection, f: Filters, kinds: list[str] | None, limit: int, before: int | None) -> dict:
    """Newest first; ``before`` is the id the previous page ended at."""
    params: dict = {"limit": limit + 1}
    conds = change_conditions(f, kinds, params)
    if before is not None:
        params["before"] = before
        conds.append("c.id < %(before)s")
    sql = f"SELECT {CHANGE_COLUMNS} FROM flowlens.changes c{_where(conds)} ORDER BY c.id DESC LIMIT %(limit)s"
    rows = await _rows(conn, sql, params)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"changes": rows, "next_cursor": encode_cursor([rows[-1]["id"]]) if more and rows else None}


async def changes_after(
    conn: AsyncConnection, f: Filters, kinds: list[str] | None, after: int, limit: int
) -> list[dict]:
    """Oldest first, ids above ``after``: what a reconnecting WebSocket client missed."""
    params: dict = {"after": after, "limit": limit}
    conds = [*change_conditions(f, kinds, params), "c.id > %(after)s"]
    sql = f"SELECT {CHANGE_COLUMNS} FROM flowlens.changes c{_where(conds)} ORDER BY c.id LIMIT %(limit)s"
    return await _rows(conn, sql, params)
