"""Landing: where decoded flow batches go (Kafka ``flows.raw`` or PostgreSQL ``flow_raw``).

``open_landing(cfg)`` returns the backend the mode calls for: Kafka in the standard and full modes,
PostgreSQL in the minimal mode (``auto`` lands in Kafka when Kafka is configured to be used, which
today means the standard/full modes; the mode switcher decides later). Both implement
:class:`ingest.land.base.Landing` for writing (the ingest daemon) and reading (the pipeline).
"""

from __future__ import annotations

from typing import Literal

from ingest.config import FlowLensConfig
from ingest.land.base import Landing

Backend = Literal["kafka", "postgres"]


def backend_for(cfg: FlowLensConfig) -> Backend:
    return "kafka" if cfg.uses_kafka else "postgres"


def open_landing(cfg: FlowLensConfig, stats=None, backend: Backend | None = None) -> Landing:
    """The landing backend of ``cfg``'s mode (or ``backend``), ready to write and read."""
    backend = backend or backend_for(cfg)
    if backend == "kafka":
        from ingest.land.kafka import KafkaLanding

        return KafkaLanding(
            cfg.kafka.bootstrap_servers,
            cfg.kafka.raw_topic,
            stats=stats,
            message_max_flows=cfg.ingest.kafka_message_max_flows,
            read_slack_seconds=cfg.ingest.kafka_read_slack_seconds,
        )
    from ingest.land.postgres import PostgresLanding

    return PostgresLanding(cfg.postgres.dsn(), cfg.backpressure.postgresql, stats=stats)
