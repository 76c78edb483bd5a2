"""Materialization metadata every FlowLens asset reports, built in one place.

Dagster's standard keys: ``dagster/row_count``, ``dagster/column_schema``, ``dagster/table_name``,
``dagster/column_lineage`` (the column-schema-change checks need the schema in each
materialization, not only in the definition). Plus the windows' source positions (Kafka offsets
or receive-time range), per-stage timings (numeric, so Dagster plots them) and a markdown preview.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg
import polars as pl

from assets.windows import WindowResult
from ingest.window import window_key

Columns = Sequence[tuple[str, str, str]]  # (name, type, description)


def column_schema(columns: Columns) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, type_, description=desc) for name, type_, desc in columns])


def column_lineage(deps: Mapping[str, Sequence[tuple[str, str]]]) -> dg.TableColumnLineage:
    """``{column: [(upstream_asset, upstream_column), ...]}`` as Dagster column lineage."""
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=dg.AssetKey(asset), column_name=up) for asset, up in ups]
            for column, ups in deps.items()
        }
    )


def definition_metadata(table_name: str, columns: Columns) -> dict[str, object]:
    """Metadata on the asset definition (what the catalog shows before the first run)."""
    return {"dagster/table_name": table_name, "dagster/column_schema": column_schema(columns)}


def materialization_metadata(
    table_name: str,
    columns: Columns,
    lineage: Mapping[str, Sequence[tuple[str, str]]],
    results: Sequence[WindowResult],
    row_count: int | None = None,
) -> dict[str, object]:
    """Metadata of one run's materialization covering ``results`` (one per window)."""
    stages: dict[str, float] = {}
    for result in results:
        for stage, seconds in result.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    written = sum(r.rows_written for r in results)
    meta: dict[str, object] = {
        "dagster/table_name": table_name,
        "dagster/row_count": dg.MetadataValue.int(written if row_count is None else row_count),
        "dagster/column_schema": column_schema(columns),
        "dagster/column_lineage": column_lineage(lineage),
        "windows": dg.MetadataValue.int(len(results)),
        "rows_read": dg.MetadataValue.int(sum(r.rows_read for r in results)),
        "rows_written": dg.MetadataValue.int(written),
        "bytes_total": dg.MetadataValue.int(sum(r.bytes_total for r in results)),
        "packets_total": dg.MetadataValue.int(sum(r.packets_total for r in results)),
        "seconds_total": dg.MetadataValue.float(round(sum(stages.values()), 3)),
    }
    meta.update({f"seconds_{stage}": dg.MetadataValue.float(round(s, 3)) for stage, s in stages.items()})
    if results:
        meta["source"] = results[0].source
        meta["source_position"] = dg.MetadataValue.json(
            {window_key(r.window_start): r.source_position for r in results[-12:]}
        )
        meta["window_range"] = f"{window_key(results[0].window_start)} .. {window_key(results[-1].window_start)}"
        previews = [r.preview for r in results if r.preview]
        if previews:
            meta["preview"] = dg.MetadataValue.md(previews[-1])
    return meta


def markdown_table(frame: pl.DataFrame, title: str) -> str:
    """A small markdown table (the preview shown on the materialization)."""
    if frame.is_empty():
        return f"**{title}**: none"
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([f"**{title}**", "", header, rule, *rows])


def _cell(value: object) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
