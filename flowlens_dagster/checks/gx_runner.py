"""Run a :class:`~flowlens_dagster.checks.suites.TableSuite` with Great Expectations 1.x.

One ephemeral GX context per process, created on first use (importing GX costs seconds). Two ways in:

- :meth:`GXRunner.validate_suspects`: what the checks use. GX validates the span's suspect rows
  (:mod:`flowlens_dagster.checks.suspects`) as a pandas DataFrame; with none, nothing can fail and
  GX is not even imported.
- :meth:`GXRunner.validate_sql`: GX validates every row of the span in PostgreSQL through a SQL
  data source and a query asset (added, validated, removed: nothing accumulates). Seconds per
  window, so it is for audits and for the tests that show both ways reach the same verdicts.

Results come back as :class:`SuiteOutcome`: which expectation failed, on which column, how many
rows and a few example values, in a form that becomes Dagster metadata as is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from flowlens_dagster.checks.suites import TableSuite

EXAMPLES = 5  # unexpected values shown per failed expectation
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}
_ROW_COUNT = "expect_table_row_count_to_be_between"


@dataclass
class Failure:
    """One failed expectation, described for the operator."""

    expectation: str
    column: str
    meaning: str
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    observed: Any = None
    error: str = ""

    def sentence(self, at_least: bool = False) -> str:
        if self.error:
            return f"{self.meaning} could not be evaluated on {self.column or 'the table'}: {self.error}"
        count = "breaks"
        if self.unexpected_count is not None:
            count = f"{'at least ' if at_least else ''}{self.unexpected_count} row(s) break"
        shown = f" (e.g. {'; '.join(_short(e) for e in self.examples[:3])})" if self.examples else ""
        return f"{count} '{self.meaning}' [{self.column}]{shown}"


@dataclass
class SuiteOutcome:
    """What one suite found in one span."""

    suite: str
    table: str
    span: str
    rows: int
    evaluated: int
    failures: list[Failure]
    seconds: float
    suspect_rows: int | None = None  # rows GX validated, when only the suspect rows were (see suspects.py)
    capped: bool = False  # the suspect rows were cut at suspects.MAX_SUSPECTS: counts are lower bounds

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        head = f"{self.table}, window {self.span}"
        if self.success:
            return f"{head}: {self.rows} row(s) pass all {self.evaluated} expectations of {self.suite}"
        lines = [f"{head}: {len(self.failures)} of {self.evaluated} expectations of {self.suite} fail:"]
        return "\n".join(lines + [f"- {f.sentence(self.capped)}" for f in self.failures])

    def metadata(self) -> dict[str, Any]:
        """JSON-able metadata (the Dagster layer wraps it in MetadataValues)."""
        return {
            "suite": self.suite,
            "table": self.table,
            "window": self.span,
            "rows": self.rows,
            "evaluated_expectations": self.evaluated,
            "failed_expectations": len(self.failures),
            "suspect_rows": self.suspect_rows,
            "counts_are_lower_bounds": self.capped,
            "failures": [_jsonable(asdict(f)) for f in self.failures],
            "seconds": round(self.seconds, 4),
        }


class GXRunner:
    """Validates suites against PostgreSQL queries or DataFrames through one ephemeral GX context."""

    def __init__(self) -> None:
        self._context: Any = None
        self._sources: dict[str, Any] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def validate_sql(self, url: str, suite: TableSuite) -> SuiteOutcome:
        """Validate the rows of ``suite.query`` in the PostgreSQL database at SQLAlchemy ``url``."""
        with self._lock:
            started = time.perf_counter()
            source = self._postgres(url)
            name = f"{suite.name}_{next(self._ids)}"
            asset = source.add_query_asset(name=name, query=suite.query)
            try:
                batch = asset.add_batch_definition_whole_table("all").get_batch()
                return self._validate(batch, suite, started)
            finally:
                source.delete_asset(name)

    def validate_suspects(self, frame: Any, suite: TableSuite, rows: int, capped: bool) -> SuiteOutcome:
        """Validate the suspect rows of a span (``suspects.suspects_sql``) out of ``rows`` in the span.

        No suspect row means no expectation can fail (the suspect query is compiled from the same
        expectations), so GX, whose fixed cost is ~0.5 s per suite, runs only when there is something
        to explain.
        """
        if len(frame) == 0:
            return SuiteOutcome(suite.label, suite.table, suite.span.key, rows, len(suite.expectations), [], 0.0, 0)
        outcome = self.validate_frame(frame, suite)
        outcome.suspect_rows, outcome.rows, outcome.capped = outcome.rows, rows, capped
        return outcome

    def validate_frame(self, frame: Any, suite: TableSuite) -> SuiteOutcome:
        """Validate a pandas DataFrame (every row of the span, or its suspect rows)."""
        with self._lock:
            started = time.perf_counter()
            context = self.context()
            source = self._sources.get("pandas") or context.data_sources.add_pandas("frames")
            self._sources["pandas"] = source
            name = f"{suite.name}_{next(self._ids)}"
            asset = source.add_dataframe_asset(name=name)
            try:
                batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
                    batch_parameters={"dataframe": frame}
                )
                return self._validate(batch, suite, started)
            finally:
                source.delete_asset(name)

    def context(self) -> Any:
        if self._context is None:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self._context = gx.get_context(mode="ephemeral")
            self._context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        return self._context

    def close_connections(self) -> None:
        """Dispose the PostgreSQL sources' connection pools (a database about to be dropped needs it)."""
        for key, source in list(self._sources.items()):
            if key == "pandas":
                continue
            with contextlib.suppress(Exception):  # a source that never connected has no engine to dispose
                source.get_engine().dispose()
            with contextlib.suppress(Exception):
                self.context().data_sources.delete(source.name)
            del self._sources[key]

    def _postgres(self, url: str) -> Any:
        if url not in self._sources:
            self._sources[url] = self.context().data_sources.add_postgres(
                name=f"postgres_{len(self._sources)}", connection_string=url
            )
        return self._sources[url]

    def _validate(self, batch: Any, suite: TableSuite, started: float) -> SuiteOutcome:
        result = batch.validate(build_gx_suite(suite), result_format=RESULT_FORMAT)
        rows, failures = 0, []
        for item in result.results:
            config = item.expectation_config
            if config.type == _ROW_COUNT:
                rows = int(item.result.get("observed_value") or 0)
                continue
            error = _error(item)
            if item.success and not error:
                continue
            failures.append(
                Failure(
                    expectation=config.type,
                    column=_column(config.kwargs),
                    meaning=(config.meta or {}).get("meaning", config.type),
                    unexpected_count=item.result.get("unexpected_count"),
                    examples=list(item.result.get("partial_unexpected_list") or [])[:EXAMPLES],
                    observed=item.result.get("observed_value"),
                    error=error,
                )
            )
        return SuiteOutcome(
            suite=suite.label,
            table=suite.table,
            span=suite.span.key,
            rows=rows,
            evaluated=len(result.results) - 1,
            failures=failures,
            seconds=time.perf_counter() - started,
        )


def build_gx_suite(suite: TableSuite) -> Any:
    """The GX ``ExpectationSuite`` for ``suite`` (plus a row count, reported as ``rows``)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = [gxe.ExpectTableRowCountToBeBetween(min_value=0)]
    expectations += [getattr(gxe, e.kind)(**e.kwargs, meta={"meaning": e.meaning}) for e in suite.expectations]
    # Passing the list to the constructor skips add_expectation's quadratic duplicate search.
    return gx.ExpectationSuite(
        name=suite.label, expectations=expectations, meta={"version": suite.version, "table": suite.table}
    )


def _error(item: Any) -> str:
    info = item.exception_info or {}
    if "raised_exception" not in info:  # keyed per metric when several metrics were computed
        info = next((v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")), {})
    if not info.get("raised_exception"):
        return ""
    return str(info.get("exception_message") or "expectation raised an exception").splitlines()[0][:300]


def _column(kwargs: dict[str, Any]) -> str:
    for key in ("column", "column_list"):
        if kwargs.get(key):
            value = kwargs[key]
            return value if isinstance(value, str) else ", ".join(value)
    if kwargs.get("column_A"):
        return f"{kwargs['column_A']}, {kwargs['column_B']}"
    return ""


def _short(value: Any) -> str:
    """An example value for a sentence: rows (compound keys) as k=v pairs, long text cut."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_jsonable(v)}" for k, v in value.items())
    else:
        text = str(_jsonable(value))
    return text if len(text) <= 160 else text[:157] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


RUNNER = GXRunner()
"""The process-wide runner (one GX context per process)."""
