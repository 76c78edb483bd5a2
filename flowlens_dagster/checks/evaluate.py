"""Every FlowLens check as plain data, and how to evaluate it for a span without Dagster.

:data:`CHECKS` lists each check once: its name, the asset it guards, whether it blocks downstream
assets, and the function that evaluates it for one span. :mod:`flowlens_dagster.checks.asset_checks`
turns the list into Dagster asset checks; :func:`run_window_checks` evaluates a window's checks
directly (the pipeline bench times it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flowlens_dagster.checks import footers, names, reconcile, suites
from flowlens_dagster.checks.gx_runner import RUNNER
from flowlens_dagster.checks.reconcile import Finding
from flowlens_dagster.checks.sources import DuckLimits, Sources, Totals
from flowlens_dagster.checks.suites import IP_MINIMUM, TableSuite
from flowlens_dagster.checks.suspects import repeated_keys_sql, screen_sql, unique_keys
from flowlens_dagster.checks.windows import Span
from ingest.window import WINDOW

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
LAKE_COLUMNS = [
    *suites.FLOW_KEY, "flow_version", "tcp_flags", "sampling_rate", "client_addr", "server_addr", "server_port",
    "window_start",
]  # fmt: skip


@dataclass(frozen=True)
class CheckSpec:
    """One check: what it guards and how it is evaluated for one span."""

    name: str
    asset: str
    blocking: bool
    description: str
    evaluate: Callable[[Sources, Span], Finding]
    period: str = "window"  # window (5 minutes), hour or day: the partitions of ``asset``
    reads: tuple[str, ...] = ()  # other assets the check reads: it runs after them in a run


def suite_finding(check: str, suite: TableSuite, sources: Sources) -> Finding:
    """Validate ``suite`` on the span's suspect rows in PostgreSQL and wrap the outcome as a finding."""
    return _finding(check, suite, *sources.pg_suspects(suite))


def _finding(check: str, suite: TableSuite, rows: int, frame: Any, capped: bool) -> Finding:
    outcome = RUNNER.validate_suspects(frame, suite, rows, capped)
    return Finding(check, outcome.success, outcome.summary(), outcome.metadata())


LANDED_COLUMNS = [*suites.FLOW_KEY, "flow_version", "tcp_flags", "sampling_rate"]
IP_MINIMUM_SQL = f"bytes::BIGINT - 20 * packets::BIGINT AS {IP_MINIMUM}"


def landing_suite(sources: Sources, span: Span) -> Finding:
    """The landing suite on the window's landed flows.

    PostgreSQL: ``flow_raw`` itself. Kafka (and auto), and PostgreSQL windows read from their
    ``flow_raw_batches``: the flows exactly as ``enriched_flows`` read them, from the window's lake
    files, which keep every landed column unchanged (enrichment only adds columns;
    ``lake_matches_load`` and ``landing_matches_load`` prove the files hold what was read and
    landed). Reading the topic again cost a third of the window's processing time. Before the
    window is processed (no load or no files) the window is read back from the topic, or
    ``flow_raw`` is scanned.
    """
    suite = suites.landing_suite(span)
    kafka = sources.landing_is_kafka(span)
    read_as_arrow = kafka or sources.landing_read_batches(span)
    if read_as_arrow and sources.load(span, names.ENRICHED_FLOWS) is not None and sources.lake_files(span):
        base = sources.lake_query(span, LANDED_COLUMNS, IP_MINIMUM_SQL)
        return _lake_finding(names.LANDING_SUITE, suite, sources, span, base)
    if not kafka:
        return suite_finding(names.LANDING_SUITE, suite, sources)
    base = f"SELECT {', '.join(LANDED_COLUMNS)}, {IP_MINIMUM_SQL} FROM landed"
    landed = sources.landed_table(span)
    return _finding(
        names.LANDING_SUITE, suite, *sources.duck_suspects(suite, base, landed.num_rows, {"landed": landed})
    )


def enriched_suite(sources: Sources, span: Span) -> Finding:
    base = sources.lake_query(span, LAKE_COLUMNS, IP_MINIMUM_SQL)
    if base is None:
        return Finding(names.ENRICHED_SUITE, False, (
            f"window {span}: no Parquet files in {sources.lake_dir(span.start)}. Materialize partition {span.key}"
            f" ({reconcile.rematerialize(span)})."
        ), {"window": span.key})  # fmt: skip
    return _lake_finding(names.ENRICHED_SUITE, suites.enriched_suite(span), sources, span, base)


SUMS = ("bytes", "packets")


def lake_screen(sources: Sources, span: Span) -> dict[str, int]:
    """One DuckDB scan of the window's lake files for both suites that validate them: ``rows`` and,
    per suite, the rows breaking one of its row rules. The lake is the enriched suite's table and, on
    Kafka, the landing suite's copy of the landed flows; scanning once serves both (each scan of 15M
    flows decodes ~20 Parquet columns: seconds)."""
    return sources.cached("lake_screen", span, lambda: _screen(sources, span))


def _screen(sources: Sources, span: Span) -> dict[str, int]:
    # Rules the Parquet footers settle are not scanned (flowlens_dagster.checks.footers).
    ranges = footers.column_ranges(sources.lake_files(span))
    screened = {
        suite.name: (suite, footers.proven_rules(suite, ranges))
        for suite in (suites.enriched_suite(span), suites.landing_suite(span))
    }
    screen = sources.duck_row(screen_sql(sources.lake_query(span, LAKE_COLUMNS, IP_MINIMUM_SQL), screened, SUMS))
    # The same scan gives the lake's totals (lake_matches_load, stats_conserve_flows): no scan of their own.
    sources.cached("lake", span, lambda: Totals(*(int(screen[k] or 0) for k in ("rows", *SUMS))))
    return screen


def _lake_finding(check: str, suite: TableSuite, sources: Sources, span: Span, base: str) -> Finding:
    """Validate ``suite`` on the window's lake rows ``base``: when the shared screen found no row
    breaking a row rule and no key repeats, GX validates no row (the same verdict, no second scan);
    otherwise on the suspect rows, as for PostgreSQL."""
    screen = lake_screen(sources, span)
    if screen[check] == 0 and not any(_repeats(sources, base, key) for key in unique_keys(suite)):
        return _finding(check, suite, int(screen["rows"]), sources.duck_columns(base), False)
    return _finding(check, suite, *sources.duck_suspects(suite, base, sources.lake_rows(span)))


# Columns of a key that tell its rows apart in practice: the flow key's 14 columns hold the flows
# of one export packet, which share receive_time and exporter but not their addresses and ports.
# When no two rows repeat these, no two repeat the whole key (a superset of a unique set of columns
# is unique): the grouping reads and hashes 5 columns instead of 14 (15M flows: 1.9 -> 1.3 s).
# A repeat here (or a hash collision) sends the check on to the whole key.
KEY_PROBES = {tuple(suites.FLOW_KEY): ["receive_time", "src_addr", "dst_addr", "src_port", "dst_port"]}


def _repeats(sources: Sources, base: str, key: list[str]) -> bool:
    probe = KEY_PROBES.get(tuple(key))
    if probe is not None and not sources.duck_row(repeated_keys_sql(base, probe))["repeated"]:
        return False
    return bool(sources.duck_row(repeated_keys_sql(base, key))["repeated"])


def _sql_suite(check: str, build: Callable[[Span], TableSuite]) -> Callable[[Sources, Span], Finding]:
    return lambda sources, span: suite_finding(check, build(span), sources)


def _rollup_suite(check: str, table: str, column: str) -> Callable[[Sources, Span], Finding]:
    return lambda sources, span: suite_finding(check, suites.rollup_suite(table, column, span), sources)


def _rollup_conserves(check: str, rollup: tuple[str, str], source: tuple[str, str]) -> Callable[..., Finding]:
    return lambda sources, span: reconcile.rollup_conserves(sources, span, rollup, source, check)


N = names
CHECKS: tuple[CheckSpec, ...] = (
    # Runs after enriched_flows in a run: on Kafka it validates the flows as that asset read them.
    CheckSpec(N.LANDING_SUITE, N.FLOWS_LANDED, False, "GX suite on the landing (flow_raw or flows.raw) of the window",
              landing_suite, reads=(N.ENRICHED_FLOWS,)),
    CheckSpec(N.ENRICHED_SUITE, N.ENRICHED_FLOWS, True, "GX suite on the window's Parquet files", enriched_suite),
    CheckSpec(N.LAKE_MATCHES_LOAD, N.ENRICHED_FLOWS, True,
              "the lake holds exactly the flows enriched_flows read and wrote", reconcile.lake_matches_load),
    CheckSpec(N.LANDING_MATCHES_LOAD, N.ENRICHED_FLOWS, False,
              "the landing holds what was processed (late data / deleted flows)", reconcile.landing_matches_load),
    CheckSpec(N.FLOW_STATS_SUITE, N.FLOW_STATS, True, "GX suite on flow_stats rows of the window",
              _sql_suite(N.FLOW_STATS_SUITE, suites.flow_stats_suite)),
    CheckSpec(N.STATS_CONSERVE_FLOWS, N.FLOW_STATS, True, "flows, bytes, packets: flow_stats == lake",
              reconcile.stats_conserve_flows),
    CheckSpec(N.NO_WINDOW_GAP, N.FLOW_STATS, False, "every earlier window was materialized", reconcile.no_window_gap),
    CheckSpec(N.ASSETS_SUITE, N.NETWORK_ASSETS, True, "GX suite on the assets seen in the window",
              _sql_suite(N.ASSETS_SUITE, suites.assets_suite), reads=(N.FLOW_STATS,)),
    CheckSpec(N.ASSETS_COVER_STATS, N.NETWORK_ASSETS, True, "every address in flow_stats is an asset",
              reconcile.assets_cover_stats, reads=(N.FLOW_STATS,)),
    CheckSpec(N.DEPENDENCIES_SUITE, N.DEPENDENCIES, True, "GX suite on the dependencies seen in the window",
              _sql_suite(N.DEPENDENCIES_SUITE, suites.dependencies_suite)),
    CheckSpec(N.DEPENDENCIES_COVER_STATS, N.DEPENDENCIES, True, "every flow_stats key is a dependency",
              reconcile.dependencies_cover_stats),
    CheckSpec(N.CHANGES_SUITE, N.TOPOLOGY_CHANGES, False, "GX suite on the changes detected in the window",
              _sql_suite(N.CHANGES_SUITE, suites.changes_suite)),
    CheckSpec(N.HOURLY_SUITE, N.FLOW_STATS_HOURLY, True, "GX suite on the hour's rollup rows",
              _rollup_suite(N.HOURLY_SUITE, "flow_stats_hourly", "hour_start"), period="hour"),
    CheckSpec(N.HOURLY_CONSERVES_STATS, N.FLOW_STATS_HOURLY, True, "the hour's sums == its flow_stats windows",
              _rollup_conserves(N.HOURLY_CONSERVES_STATS, ("flow_stats_hourly", "hour_start"),
                                ("flow_stats", "window_start")), period="hour"),
    CheckSpec(N.DAILY_SUITE, N.FLOW_STATS_DAILY, False, "GX suite on the day's rollup rows",
              _rollup_suite(N.DAILY_SUITE, "flow_stats_daily", "day_start"), period="day"),
    CheckSpec(N.DAILY_CONSERVES_STATS, N.FLOW_STATS_DAILY, False, "the day's sums == its hourly rows",
              _rollup_conserves(N.DAILY_CONSERVES_STATS, ("flow_stats_daily", "day_start"),
                                ("flow_stats_hourly", "hour_start")), period="day"),
)  # fmt: skip
BY_NAME: dict[str, CheckSpec] = {spec.name: spec for spec in CHECKS}


def spans(period: str, start: datetime, end: datetime, key: Callable[[datetime], str]) -> list[Span]:
    """The spans of ``period`` in [start, end) (one run may cover a range of partitions)."""
    step = {"window": WINDOW, "hour": HOUR, "day": DAY}[period]
    out, current = [], start
    while current < end:
        out.append(Span.of(current, current + step, key(current)))
        current += step
    return out


def evaluate(spec: CheckSpec, sources: Sources, over: list[Span]) -> Finding:
    """Evaluate ``spec`` for every span; one finding that passes only when every span passes.

    An unexpected error becomes a failed finding that says what broke, never a crash of the run.
    """
    findings = []
    for span in over:
        try:
            findings.append(spec.evaluate(sources, span))
        except Exception as exc:  # reported as the check's result, with its cause
            findings.append(Finding(spec.name, False, (
                f"{spec.name} could not be evaluated for {span}: {type(exc).__name__}: {exc}. Check that "
                "PostgreSQL and the lake are reachable and migrated (flowlens migrate), then re-run the check."
            ), {"window": span.key, "error": f"{type(exc).__name__}: {exc}"}))  # fmt: skip
    if len(findings) == 1:
        return findings[0]
    failed = [f for f in findings if not f.passed]
    if not failed:
        return Finding(spec.name, True, f"{spec.name}: all {len(findings)} spans pass", {"spans": len(findings)})
    return Finding(spec.name, False, "\n\n".join(f.message for f in failed), {
        "spans": len(findings), "failed_spans": [f.metadata.get("window", f.metadata.get("span")) for f in failed],
        "first_failure": failed[0].metadata,
    })  # fmt: skip


def sources_from(resources: Mapping[str, Any] | Any) -> Sources:
    """:class:`Sources` from the Dagster resources ``postgres``, ``lake`` and ``landing`` (a mapping or
    an object with those attributes, such as ``context.resources``); the lake's ``check_memory_mb``
    caps each DuckDB query of the checks."""
    get = resources.get if isinstance(resources, Mapping) else lambda k: getattr(resources, k, None)
    postgres, lake, landing = get("postgres"), get("lake"), get("landing")
    kafka = landing is not None and getattr(landing, "mode", "minimal") in ("standard", "full", "auto")
    duck = DuckLimits(lake.check_memory_mb, lake.spill_dir())  # the lake's queries: bounded, spilled under the lake
    opener = landing.open if landing else None
    return Sources(postgres.dsn(), postgres.sqlalchemy_url(), lake.window_dir, opener, kafka, duck)


def run_window_checks(window_start: datetime, resources: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate every 5-minute check of one window; return timings and results (for the pipeline bench).

    ``resources``: ``{"postgres": PostgresResource, "lake": LakeResource, "landing": LandingResource}``.
    The one-off Great Expectations import is timed separately (``gx_import_seconds``): a long-running
    Dagster process pays it once, not per window. Returns ``check_seconds`` (total, the landing
    suite included: the window job runs it), ``landing_check_seconds`` (the landing suite's share),
    ``per_check_seconds``, ``passed`` (all checks), ``failed`` ({name: message}).
    """
    started = time.perf_counter()
    RUNNER.context()
    gx_import = time.perf_counter() - started
    sources = sources_from(resources)
    span = Span.window(window_start)
    per_check, failed = {}, {}
    begin = time.perf_counter()
    try:
        for spec in CHECKS:
            if spec.period != "window":
                continue
            t0 = time.perf_counter()
            finding = evaluate(spec, sources, [span])
            per_check[spec.name] = round(time.perf_counter() - t0, 4)
            if not finding.passed:
                failed[spec.name] = finding.message
    finally:
        sources.close()
    landing = sum(s for name, s in per_check.items() if BY_NAME[name].asset == names.FLOWS_LANDED)
    return {
        "window": span.key,
        # The window job also runs the landing suite (flowlens_dagster.jobs), so it counts here;
        # landing_check_seconds is its share.
        "check_seconds": round(time.perf_counter() - begin, 4),
        "landing_check_seconds": round(landing, 4),
        "gx_import_seconds": round(gx_import, 4),
        "per_check_seconds": per_check,
        "checks": len(per_check),
        "passed": not failed,
        "failed": failed,
    }
