"""Bytes on grouped topology edges: which traffic table covers which period, and the sums the API gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from flowlens_dagster.api.group_bytes import Span, spans
from tests.flowlens_dagster.api.conftest import T0

DAILY, HOURLY, FINE = "flowlens.flow_stats_daily", "flowlens.flow_stats_hourly", "flowlens.flow_stats"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_each_period_comes_from_the_coarsest_table_that_rolled_it_up():
    got = spans(at("2026-11-24T10:03"), at("2026-11-26T12:07"), at("2026-11-26T00:00"), at("2026-11-26T11:00"))
    assert sorted(got, key=lambda s: s.start) == [
        Span(FINE, "window_start", at("2026-11-24T10:03"), at("2026-11-24T11:00")),
        Span(HOURLY, "hour_start", at("2026-11-24T11:00"), at("2026-11-25T00:00")),
        Span(DAILY, "day_start", at("2026-11-25T00:00"), at("2026-11-26T00:00")),
        Span(HOURLY, "hour_start", at("2026-11-26T00:00"), at("2026-11-26T11:00")),
        Span(FINE, "window_start", at("2026-11-26T11:00"), at("2026-11-26T12:07")),
    ]


def test_all_time_and_missing_rollups():
    assert spans(None, None, at("2026-11-26T00:00"), at("2026-11-26T11:00")) == [
        Span(DAILY, "day_start", None, at("2026-11-26T00:00")),
        Span(HOURLY, "hour_start", at("2026-11-26T00:00"), at("2026-11-26T11:00")),
        Span(FINE, "window_start", at("2026-11-26T11:00"), None),
    ]
    assert spans(None, None, None, None) == [Span(FINE, "window_start", None, None)]  # no rollup ran yet
    # A range inside one hour, or older than the newest rollup but not a whole period of it.
    assert spans(at("2026-11-20T10:05"), at("2026-11-20T10:40"), at("2026-11-26T00:00"), None) == [
        Span(FINE, "window_start", at("2026-11-20T10:05"), at("2026-11-20T10:40"))
    ]
    assert spans(at("2026-11-26T12:00"), at("2026-11-26T11:00"), None, None) == []  # empty range


# Traffic in every table. Rows of a period a rollup holds must not be counted again from the finer table.
DAY_BEFORE = T0 - timedelta(days=1, hours=12)  # 2026-11-25 00:00
HOUR = T0 - timedelta(hours=2)  # 2026-11-26 10:00 (the hourly rollup holds it, the daily does not)
TRAFFIC = [
    (DAILY, "day_start", DAY_BEFORE, "10.0.1.10", "10.0.0.2", 8080, 50_000),  # web -> web
    (DAILY, "day_start", DAY_BEFORE, "10.0.0.2", "10.0.0.1", 5432, 7_000),  # web -> data
    (HOURLY, "hour_start", HOUR, "10.0.1.10", "10.0.0.3", 8080, 20_000),  # web -> web
    (FINE, "window_start", DAY_BEFORE + timedelta(hours=6), "10.0.0.2", "10.0.0.1", 5432, 999),  # in the daily
    (FINE, "window_start", HOUR + timedelta(minutes=5), "10.0.1.10", "10.0.0.3", 8080, 888),  # in the hourly
]  # plus the sample map's flow_stats: web -> data 1,000 at T0 and 3,000 at T0 + 5 min


@pytest.fixture
def traffic_map(api, sample_map: str):
    with psycopg.connect(sample_map) as conn:
        for table in (DAILY, HOURLY, FINE):
            conn.execute("SELECT flowlens.ensure_day_partitions(%s::regclass, %s, 2)", (table, DAY_BEFORE.date()))
        for table, column, start, client, server, port, nbytes in TRAFFIC:
            conn.execute(
                f"""INSERT INTO {table} ({column}, client_addr, server_addr, server_port, protocol, bytes, packets,
                                         flows, first_seen, last_seen)
                    VALUES (%s, %s, %s, %s, 6, %s, 1, 1, %s, %s)""",
                (start, client, server, port, nbytes, start, start),
            )
    return api


def grouped_bytes(api, query: str) -> dict[tuple[str, str], int]:
    edges = api.get(f"/api/v1/topology?{query}", api.token()).json()["edges"]
    return {(e["source"], e["target"]): e["bytes"] for e in edges}


def naive(t: datetime) -> str:
    return t.replace(tzinfo=None).isoformat()  # the API reads a time without a zone as UTC


@pytest.mark.integration
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # all time: daily + hourly + the windows after the newest hour (T0, T0 + 5 min)
        ("group=owner&bytes=true", {("web", "web"): 70_000, ("web", "data"): 11_000, ("it", "web"): 0,
                                    ("(none)", "web"): 0, ("data", "it"): 0}),
        # the range starts in the hourly rollup and ends in the 5-minute windows
        (f"group=owner&bytes=true&since={naive(HOUR)}&until={naive(T0 + timedelta(minutes=5))}",
         {("web", "web"): 20_000, ("web", "data"): 1_000, ("it", "web"): 0, ("(none)", "web"): 0, ("data", "it"): 0}),
        ("group=owner&bytes=true&port=8080", {("web", "web"): 70_000}),
        ("group=environment&bytes=true&owner=data", {("prod", "prod"): 11_000, ("prod", "office"): 0}),
        ("group=subnet&bytes=true&protocol=6&prefix=10.0.1.0/24",
         {("10.0.1.0/24", "10.0.0.0/24"): 70_000, ("10.0.2.0/24", "10.0.1.0/24"): 0,
          ("2001:db8::/64", "10.0.1.0/24"): 0}),
    ],
)  # fmt: skip
def test_grouped_edges_sum_the_bytes_of_the_range_under_the_filters(traffic_map, query, expected):
    assert grouped_bytes(traffic_map, query) == expected


@pytest.mark.integration
def test_the_full_map_carries_bytes_and_other_grouped_answers_only_when_asked(traffic_map):
    token = traffic_map.token()
    full = traffic_map.get("/api/v1/topology", token).json()["edges"]
    by_pair = {(e["source"], e["target"]): e["bytes"] for e in full}
    assert by_pair[("10.0.1.0/24", "10.0.0.0/24")] == 70_000
    assert by_pair[("10.0.0.0/24", "10.0.0.0/24")] == 11_000
    plain = traffic_map.get("/api/v1/topology?group=owner", token).json()["edges"]
    assert plain and all("bytes" not in e for e in plain)
