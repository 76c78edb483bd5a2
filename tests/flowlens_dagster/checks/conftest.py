"""A window of real traffic, landed and processed by the real pipeline code, for the check tests.

Flows are built as columns, encoded as real NetFlow v9 and IPFIX export packets
(``ingest.tools.encode``), decoded by the collector's decoder (``ingest.decode``), landed in PostgreSQL
``flow_raw`` by the minimal-mode landing, then processed window by window with the pipeline's own
functions (``assets.*.process_window``): lake Parquet, flow_stats, assets, dependencies, changes,
each recording its ``window_loads`` row. Tests then corrupt what they need and run the checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from assets import changes, enriched_flows, flow_stats, topology
from assets.resources import (
    KafkaResource,
    LakeResource,
    LandingResource,
    PostgresResource,
    build_resources,
)
from flowlens_dagster.migrate import migrate
from flowlens_dagster.stack.postgres import ensure_database
from ingest.config import FlowLensConfig
from ingest.decode import Decoder
from ingest.land.postgres import PostgresLanding
from ingest.tools.encode import IpfixEncoder, V9Encoder
from ingest.window import window_key
from tests.conftest import truncate_flowlens_tables

CHECKS_DATABASE = "flowlens_test_checks"
# Yesterday 10:00 UTC: always inside the 5-minute partitions (which start two days back at midnight).
WINDOW0 = (datetime.now(UTC) - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
KEY0 = window_key(WINDOW0)
EXPORTERS = ("192.0.2.10", "192.0.2.20")
SERVICES = ((443, 6), (53, 17), (22, 6), (5432, 6), (123, 17))


def _addr(text: str) -> bytes:
    return ipaddress.IPv6Address(f"::ffff:{text}").packed


def traffic(n: int, window: datetime, seed: int) -> dict[str, np.ndarray]:
    """``n`` client->server flows that end inside ``window``, as encoder columns."""
    rng = np.random.default_rng(seed)
    clients = np.array([_addr(f"10.1.{i // 250}.{i % 250 + 1}") for i in range(200)], dtype="S16")
    servers = np.array([_addr(f"10.2.0.{i + 1}") for i in range(12)], dtype="S16")
    service = rng.integers(0, len(SERVICES), n)
    packets = rng.integers(1, 200, n).astype(np.uint64)
    base_us = int(window.timestamp() * 1e6)
    end = base_us + rng.integers(1_000_000, 280_000_000, n)
    return {
        "src_addr": clients[rng.integers(0, len(clients), n)],
        "dst_addr": servers[rng.integers(0, len(servers), n)],
        "src_port": rng.integers(32768, 61000, n).astype(np.uint16),
        "dst_port": np.array([SERVICES[s][0] for s in service], dtype=np.uint16),
        "protocol": np.array([SERVICES[s][1] for s in service], dtype=np.uint8),
        "tcp_flags": np.where(np.array([SERVICES[s][1] for s in service]) == 6, 0x1B, 0).astype(np.uint16),
        "packets": packets,
        "bytes": packets * rng.integers(40, 1500, n).astype(np.uint64),
        "flow_start": end - rng.integers(0, 60_000_000, n),
        "flow_end": end,
        "input_if": np.full(n, 3, dtype=np.uint32),
        "output_if": np.full(n, 7, dtype=np.uint32),
    }


def decode_export(columns: dict[str, np.ndarray], window: datetime, seed: int) -> pa.RecordBatch:
    """Encode the flows as v9 (first exporter) and IPFIX (second) packets; decode them as received
    5 seconds after each flow's end (always inside the window for these flows)."""
    half = len(columns["bytes"]) // 2
    decoder = Decoder()
    received = []
    for exporter, encoder, part in (
        (EXPORTERS[0], V9Encoder(template_id=256, domain=1), slice(0, half)),
        (EXPORTERS[1], IpfixEncoder(template_id=300, domain=7), slice(half, None)),
    ):
        cols = {k: v[part] for k, v in columns.items()}
        export_s = int(cols["flow_end"].max() // 1_000_000) + 1
        receive_us = min(
            export_s * 1_000_000 + 4_000_000 + seed, int((window + timedelta(minutes=5)).timestamp() * 1e6) - 1
        )
        received += [(exporter, p, receive_us) for p in encoder.packets(cols, export_time=export_s)]
    return decoder.decode_many(received)


@dataclass
class Pipeline:
    """The test stack's resources plus helpers to land and process windows with the real code."""

    config: FlowLensConfig
    postgres: PostgresResource
    lake: LakeResource
    landing_resource: LandingResource
    landing: PostgresLanding

    @property
    def resources(self) -> dict[str, object]:
        return {"postgres": self.postgres, "lake": self.lake, "landing": self.landing_resource}

    def dagster_resources(self) -> dict[str, object]:
        """Every resource the pipeline's assets ask for, on this test database and lake."""
        update = {"pipeline": self.config.pipeline.model_copy(update={"lake_dir": self.lake.root})}
        return build_resources(self.config.model_copy(update=update), use_env=False)

    def land(self, window: datetime, flows: int = 600, seed: int = 1) -> pa.RecordBatch:
        batch = decode_export(traffic(flows, window, seed), window, seed)
        assert batch.num_rows == flows, "the decoder must return every encoded flow"
        self.landing.write(batch)
        return batch

    def process(self, window: datetime) -> None:
        """Materialize every window asset for ``window`` with the pipeline's own functions."""
        enriched_flows.process_window(window, self.landing, self.lake, None, self.postgres)
        flow_stats.process_window(window, self.lake, self.postgres)
        topology.process_assets_window(window, self.lake, self.postgres)
        topology.process_dependencies_window(window, self.postgres)
        changes.process_window(window, self.postgres, gone_after=12)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with self.postgres.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="session")
def checks_config(flowlens_config: FlowLensConfig) -> FlowLensConfig:
    """The test stack with a database of its own: these tests truncate and corrupt tables, which
    must not race with other suites sharing ``flowlens_test``."""
    ensure_database(flowlens_config, CHECKS_DATABASE)
    cfg = flowlens_config.model_copy(
        update={"postgres": flowlens_config.postgres.model_copy(update={"database": CHECKS_DATABASE})}
    )
    migrate(cfg, log=lambda _message: None)
    return cfg


@pytest.fixture
def pipeline(checks_config: FlowLensConfig, tmp_path) -> Iterator[Pipeline]:
    truncate_flowlens_tables(checks_config.postgres.dsn())
    pg = checks_config.postgres
    postgres = PostgresResource(host=pg.host, port=pg.port, database=pg.database, user=pg.user, password=pg.password)
    landing_resource = LandingResource(mode="minimal", postgres=postgres, kafka=KafkaResource())
    landing = PostgresLanding(pg.dsn())
    try:
        yield Pipeline(checks_config, postgres, LakeResource(root=str(tmp_path / "lake")), landing_resource, landing)
    finally:
        landing.close()
