"""Landing: where decoded flow batches go (Kafka ``flows.raw`` or PostgreSQL ``flow_raw``).

``open_landing(cfg)`` returns the backend the mode calls for: Kafka in the standard and full modes,
PostgreSQL in the minimal mode, and in the auto mode :class:`ingest.land.auto.AutoLanding`, which
switches between the two on the measured rate and reads a window from both. All implement
:class:`ingest.land.base.Landing` for writing (the ingest daemon) and reading (the pipeline).
"""

from __future__ import annotations

from typing import Literal

from ingest.config import FlowLensConfig
from ingest.land.base import Landing

Backend = Literal["kafka", "postgres", "auto"]


def backend_for(cfg: FlowLensConfig) -> Backend:
    if cfg.mode == "auto":
        return "auto"
    return "kafka" if cfg.uses_kafka else "postgres"


def landing_name(cfg: FlowLensConfig) -> str:
    """The landing for people: which backend, or how auto mode chooses."""
    return {"kafka": "Kafka", "postgres": "PostgreSQL", "auto": "PostgreSQL or Kafka by rate (auto)"}[backend_for(cfg)]


def open_landing(cfg: FlowLensConfig, stats=None, backend: Backend | None = None, decision=None) -> Landing:
    """The landing backend of ``cfg``'s mode (or ``backend``), ready to write and read; ``decision``:
    the daemon's shared auto-mode decision (:class:`ingest.scaling.shared.SharedDecision`)."""
    backend = backend or backend_for(cfg)
    if backend == "auto":
        from ingest.land.auto import AutoLanding

        return AutoLanding(cfg, stats=stats, decision=decision)
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
