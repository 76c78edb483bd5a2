"""``flowlens run``'s summary compares the generator's truth with the generator's flows only."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from flowlens_dagster.run import SPANS_FILE, print_summary
from ingest.land.postgres import PostgresLanding
from tests.ingest.flows import random_flows

pytestmark = pytest.mark.integration


def from_exporter(batch: pa.RecordBatch, address: str) -> pa.RecordBatch:
    raw = ipaddress.IPv6Address(f"::ffff:{address}").packed
    column = pa.array([raw] * batch.num_rows, pa.binary(16))
    return batch.set_column(batch.schema.get_field_index("exporter"), "exporter", column)


def test_other_traffic_in_the_span_is_not_counted_as_the_generators(flowlens_config, clean_pg, tmp_path, capsys):
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    last = first + timedelta(minutes=5)
    start_us = int(first.timestamp() * 1e6)
    cfg = flowlens_config.model_copy(update={"state_dir": tmp_path})
    landing = PostgresLanding(cfg.postgres.dsn())
    try:
        landing.write(from_exporter(random_flows(700, start_us, seed=1), "127.0.0.1"))  # the generator's
        landing.write(from_exporter(random_flows(300, start_us, seed=2), "10.9.9.9"))  # a real exporter
        landing.write(from_exporter(random_flows(50, start_us + 3600 * 10**6, seed=3), "127.0.0.2"))  # after
    finally:
        landing.close()
    (tmp_path / "run").mkdir()
    span = {"first": first.isoformat(), "last": last.isoformat(), "flows": 700, "bytes": 1,
            "exporters": ["127.0.0.1", "127.0.0.2"]}  # fmt: skip
    (tmp_path / "run" / SPANS_FILE).write_text(json.dumps(span) + "\n")
    print_summary(cfg)
    lines = {line.strip().rsplit(None, 1)[0].strip(): line.split()[-1] for line in capsys.readouterr().out.splitlines()
             if line.startswith("  flows landed")}  # fmt: skip
    assert lines == {"flows landed (flow_raw)": "700"}
