"""Great Expectations suites, one per table, versioned in code.

A suite here is plain data (:class:`TableSuite`: expectation class names, arguments and what a
failure means) so importing this module does not import Great Expectations (~2-4 s);
:mod:`flowlens_dagster.checks.gx_runner` turns it into a GX ``ExpectationSuite`` when a check runs.
Bump a suite's ``version`` whenever its expectations change: the version is in every result.

Each PostgreSQL suite comes with the query that scopes the table to one window (GX validates the
query's rows, not the whole table). Rules that span two columns and that GX has no expectation for
(``bytes >= 20 x packets``: an IP packet carries at least a 20-byte header) are computed by the
query as an extra column, ``bytes_minus_20x_packets``, which must be >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flowlens_dagster.checks import names
from flowlens_dagster.checks.windows import Span
from ingest.schema import SFLOW_VERSION

# IANA protocol numbers in use: 0-145 assigned, 253-254 experimentation. 146-252 are unassigned and
# 255 reserved, so a value there means a decoder or aggregation bug, not real traffic.
SANE_PROTOCOLS: tuple[int, ...] = (*range(0, 146), 253, 254)
FLOW_VERSIONS: tuple[int, ...] = (5, 9, 10, SFLOW_VERSION)
CHANGE_KINDS: tuple[str, ...] = ("new_asset", "new_dependency", "dependency_gone")
MAX_U32 = 2**32 - 1
IP_MINIMUM = "bytes_minus_20x_packets"
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Expect:
    """One expectation: the GX class name (``great_expectations.expectations``), its kwargs, and
    what a failure means to an operator (shown in the check's metadata)."""

    kind: str
    kwargs: dict[str, Any]
    meaning: str
    enforced_by: str = ""  # a database constraint that makes the rule hold by construction


@dataclass(frozen=True)
class TableSuite:
    """A versioned suite for one table, scoped to one span (window, hour or day)."""

    name: str
    version: int
    table: str
    span: Span
    expectations: tuple[Expect, ...]
    query: str = ""  # PostgreSQL query selecting the span's rows; empty for the Parquet lake
    meta: dict[str, Any] = field(default_factory=dict)
    # The same rows with ``inet`` columns left as inet, for the one-pass suspect count: ``addr::text``
    # costs a text conversion per row and column (on 15M landed flows: 4.4 s instead of 1.2 s) and the
    # rules on those columns (NOT NULL; uniqueness) give the same verdict on inet as on its text.
    # Empty: ``query`` is scanned. The suspect rows themselves are still fetched through ``query``.
    scan: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}.v{self.version}"


# --- building blocks ---------------------------------------------------------------------------
def not_null(*columns: str) -> list[Expect]:
    return [Expect("ExpectColumnValuesToNotBeNull", {"column": c}, f"{c} is NOT NULL in the schema") for c in columns]


def between(column: str, low: Any, high: Any, meaning: str) -> Expect:
    kwargs: dict[str, Any] = {"column": column}
    if low is not None:
        kwargs["min_value"] = low
    if high is not None:
        kwargs["max_value"] = high
    return Expect("ExpectColumnValuesToBeBetween", kwargs, meaning)


def ports(*columns: str) -> list[Expect]:
    return [between(c, 0, 65535, f"{c} is a TCP/UDP port: 0-65535") for c in columns]


def protocol(column: str = "protocol") -> Expect:
    return Expect(
        "ExpectColumnValuesToBeInSet",
        {"column": column, "value_set": list(SANE_PROTOCOLS)},
        f"{column} is an IANA protocol number in use (0-145, 253, 254)",
    )


def counters(*, packets_min: int = 0, with_flows: bool = False) -> list[Expect]:
    out = [
        between("bytes", 0, None, "byte counts are never negative"),
        between("packets", packets_min, None, f"packet counts are >= {packets_min}"),
        between(IP_MINIMUM, 0, None, "bytes >= 20 x packets: every IP packet has at least a 20-byte header"),
    ]
    if with_flows:
        out.append(between("flows", 1, None, "an aggregate row counts at least one flow"))
    return out


def unique(columns: list[str], what: str, enforced_by: str = "") -> Expect:
    """``columns`` unique in the span; ``enforced_by`` names the PostgreSQL constraint that already
    guarantees it (GX still states and validates it; the suspect scan skips the grouping it would cost)."""
    return Expect(
        "ExpectCompoundColumnsToBeUnique", {"column_list": columns}, f"{what} is unique in the span", enforced_by
    )


def ordered(earlier: str, later: str, allow_missing: bool = False) -> Expect:
    kwargs: dict[str, Any] = {"column_A": later, "column_B": earlier, "or_equal": True}
    if allow_missing:
        kwargs["ignore_row_if"] = "either_value_is_missing"
    return Expect("ExpectColumnPairValuesAToBeGreaterThanB", kwargs, f"{earlier} <= {later}")


def inside(column: str, span: Span, meaning: str = "") -> Expect:
    # GX's max is inclusive: the last microsecond of the span is the highest valid value.
    last = span.end - _MICROSECOND
    return between(column, span.start, last, meaning or f"{column} lies inside {span.key} [start, end)")


def starts_at(column: str, span: Span) -> Expect:
    return Expect(
        "ExpectColumnValuesToBeInSet",
        {"column": column, "value_set": [span.start]},
        f"{column} is exactly the span start {span.start:%Y-%m-%d %H:%M} (aligned, not shifted)",
    )


def _range(column: str, span: Span) -> str:
    start, end = span.sql()
    return f"{column} >= {start} AND {column} < {end}"


# --- suites ------------------------------------------------------------------------------------
FLOW_KEY = [
    "receive_time", "exporter", "observation_domain", "src_addr", "dst_addr", "src_port", "dst_port",
    "protocol", "flow_start", "flow_end", "bytes", "packets", "input_if", "output_if",
]  # fmt: skip
FLOW_REQUIRED = [
    "receive_time", "exporter", "observation_domain", "flow_version", "src_addr", "dst_addr",
    "src_port", "dst_port", "protocol", "tcp_flags", "bytes", "packets", "sampling_rate",
]  # fmt: skip


def _flow_record_rules() -> list[Expect]:
    """Rules every normalized flow record obeys, in the landing and in the lake."""
    return [
        *not_null(*FLOW_REQUIRED),
        *ports("src_port", "dst_port"),
        protocol(),
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "flow_version", "value_set": list(FLOW_VERSIONS)},
            "flow_version is 5, 9, 10 (IPFIX) or 105 (sFlow)",
        ),
        between("sampling_rate", 1, MAX_U32, "sampling_rate is >= 1 (1 = unsampled)"),
        between("observation_domain", 0, MAX_U32, "observation_domain is an unsigned 32-bit id"),
        *counters(),
    ]


def landing_suite(span: Span) -> TableSuite:
    """``flow_raw`` (minimal-mode landing) for one window."""
    cols = ", ".join(c for c in [*FLOW_KEY, "flow_version", "tcp_flags", "sampling_rate"] if c not in _INET)
    inet = ", ".join(f"{c}::text AS {c}" for c in _INET)
    rows = f"bytes - 20 * packets AS {IP_MINIMUM} FROM flowlens.flow_raw WHERE {_range('receive_time', span)}"
    query = f"SELECT {cols}, {inet}, {rows}"
    scan = f"SELECT {cols}, {', '.join(_INET)}, {rows}"
    return TableSuite(
        name=names.LANDING_SUITE,
        version=1,
        table="flowlens.flow_raw",
        span=span,
        # An exporter with a skewed or wrapped uptime clock can report a start after the end: the
        # landing check (not blocking) reports it; the lake suite leaves it out so it cannot stall windows.
        expectations=(*_flow_record_rules(), ordered("flow_start", "flow_end", allow_missing=True)),
        query=query,
        scan=scan,
    )


_INET = ("exporter", "src_addr", "dst_addr")


def enriched_suite(span: Span) -> TableSuite:
    """The enriched Parquet lake for one window (one file set per window)."""
    rules = [
        *_flow_record_rules(),
        *not_null("client_addr", "server_addr", "server_port", "window_start"),
        *ports("server_port"),
        starts_at("window_start", span),
        inside("receive_time", span, "every flow in the window's files was received inside that window"),
        unique(FLOW_KEY, "a flow record (received at, exporter, addresses, ports, counters)"),
    ]
    return TableSuite(
        name=names.ENRICHED_SUITE, version=1, table="lake:enriched_flows", span=span, expectations=tuple(rules)
    )


STATS_KEY = ["client_addr", "server_addr", "server_port", "protocol"]


def flow_stats_suite(span: Span) -> TableSuite:
    """``flow_stats`` rows of one window."""
    start, end = span.sql()
    rest = (
        f"server_port, protocol, bytes, packets, flows, first_seen, last_seen, bytes - 20 * packets AS {IP_MINIMUM} "
        # A window_start a little off the grid would escape `= start`: select the whole span instead.
        f"FROM flowlens.flow_stats WHERE window_start >= {start} AND window_start < {end}"
    )
    query = f"SELECT window_start, client_addr::text AS client_addr, server_addr::text AS server_addr, {rest}"
    scan = f"SELECT window_start, client_addr, server_addr, {rest}"
    rules = [
        *not_null("window_start", *STATS_KEY, "bytes", "packets", "flows", "first_seen", "last_seen"),
        starts_at("window_start", span),
        # With window_start == span start (rule above), the primary key makes the key unique.
        unique(STATS_KEY, "(client_addr, server_addr, server_port, protocol)", "PRIMARY KEY of flow_stats"),
        *ports("server_port"),
        protocol(),
        *counters(packets_min=1, with_flows=True),
        ordered("first_seen", "last_seen"),
    ]
    return TableSuite(names.FLOW_STATS_SUITE, 1, "flowlens.flow_stats", span, tuple(rules), query, scan=scan)


def _stats_addresses(span: Span) -> str:
    """The addresses this window's flow_stats mention (scopes the non-windowed tables)."""
    start, _ = span.sql()
    return (
        f"SELECT client_addr AS addr FROM flowlens.flow_stats WHERE window_start = {start} "
        f"UNION SELECT server_addr FROM flowlens.flow_stats WHERE window_start = {start}"
    )


def assets_suite(span: Span) -> TableSuite:
    """``assets`` rows for the addresses seen in one window."""
    _, end = span.sql()
    query = (
        "SELECT a.addr::text AS addr, a.known, a.tags, a.country, a.asn, a.first_seen, a.last_seen, "
        f"(a.first_seen < {end}) AS seen_by_window_end "
        f"FROM flowlens.assets a WHERE a.addr IN ({_stats_addresses(span)})"
    )
    rules = [
        *not_null("addr", "known", "tags", "first_seen", "last_seen"),
        Expect("ExpectColumnValuesToBeUnique", {"column": "addr"}, "one asset row per address", "PRIMARY KEY (addr)"),
        ordered("first_seen", "last_seen"),
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "seen_by_window_end", "value_set": [True]},
            "an address seen in this window has first_seen before the window's end",
        ),
        Expect(
            "ExpectColumnValueLengthsToEqual",
            {"column": "country", "value": 2},
            "country is an ISO 3166 two-letter code (or null)",
        ),
        between("asn", 0, MAX_U32, "asn is a 32-bit AS number (or null)"),
    ]
    return TableSuite(names.ASSETS_SUITE, 1, "flowlens.assets", span, tuple(rules), query)


def dependencies_suite(span: Span) -> TableSuite:
    """``dependencies`` rows for the (client, server, port, protocol) keys seen in one window."""
    start, end = span.sql()
    rest = (
        f"d.server_port, d.protocol, d.first_seen, d.last_seen, (d.first_seen < {end}) AS seen_by_window_end "
        "FROM flowlens.dependencies d JOIN flowlens.flow_stats s USING (client_addr, server_addr, server_port, "
        f"protocol) WHERE s.window_start = {start}"
    )
    query = f"SELECT d.client_addr::text AS client_addr, d.server_addr::text AS server_addr, {rest}"
    scan = f"SELECT d.client_addr, d.server_addr, {rest}"  # the count needs no address text (1M edges: -0.2 s)
    rules = [
        *not_null(*STATS_KEY, "first_seen", "last_seen"),
        unique(STATS_KEY, "(client_addr, server_addr, server_port, protocol)", "PRIMARY KEY of dependencies"),
        *ports("server_port"),
        protocol(),
        ordered("first_seen", "last_seen"),
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "seen_by_window_end", "value_set": [True]},
            "a dependency seen in this window has first_seen before the window's end",
        ),
    ]
    return TableSuite(names.DEPENDENCIES_SUITE, 1, "flowlens.dependencies", span, tuple(rules), query, scan=scan)


def changes_suite(span: Span) -> TableSuite:
    """``changes`` detected for one window."""
    start, end = span.sql()
    query = (
        "SELECT window_start, kind, subject, server_port, protocol, "
        "CASE WHEN kind = 'new_asset' THEN addr IS NOT NULL "
        "ELSE client_addr IS NOT NULL AND server_addr IS NOT NULL AND server_port IS NOT NULL "
        "AND protocol IS NOT NULL END AS subject_columns_set "
        f"FROM flowlens.changes WHERE window_start >= {start} AND window_start < {end}"
    )
    rules = [
        *not_null("window_start", "kind", "subject"),
        starts_at("window_start", span),
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "kind", "value_set": list(CHANGE_KINDS)},
            f"kind is one of {', '.join(CHANGE_KINDS)}",
        ),
        unique(["kind", "subject"], "(kind, subject)", "PRIMARY KEY (window_start, kind, subject)"),
        Expect(
            "ExpectColumnValuesToBeInSet",
            {"column": "subject_columns_set", "value_set": [True]},
            "new_asset rows set addr; dependency rows set client_addr, server_addr, server_port, protocol",
        ),
        *ports("server_port"),
        protocol(),
    ]
    return TableSuite(names.CHANGES_SUITE, 1, "flowlens.changes", span, tuple(rules), query)


def rollup_suite(table: str, column: str, span: Span) -> TableSuite:
    """An hourly (``hour_start``) or daily (``day_start``) rollup of ``flow_stats`` for one period."""
    start, end = span.sql()
    query = (
        f"SELECT {column}, client_addr::text AS client_addr, server_addr::text AS server_addr, server_port, "
        f"protocol, bytes, packets, flows, first_seen, last_seen, bytes - 20 * packets AS {IP_MINIMUM} "
        f"FROM flowlens.{table} WHERE {column} >= {start} AND {column} < {end}"
    )
    rules = [
        *not_null(column, *STATS_KEY, "bytes", "packets", "flows", "first_seen", "last_seen"),
        starts_at(column, span),
        unique(STATS_KEY, "(client_addr, server_addr, server_port, protocol)", f"PRIMARY KEY of {table}"),
        *ports("server_port"),
        protocol(),
        *counters(packets_min=1, with_flows=True),
        ordered("first_seen", "last_seen"),
    ]
    name = names.HOURLY_SUITE if column == "hour_start" else names.DAILY_SUITE
    return TableSuite(name, 1, f"flowlens.{table}", span, tuple(rules), query)
