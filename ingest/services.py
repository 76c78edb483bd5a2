"""Is a service up? One cheap probe per service, and one line that says what to start.

Commands that need PostgreSQL, Kafka or Redis call ``require`` before any work, so a stopped stack
gives one line naming the missing service and the command that starts it, not a traceback or a
page of client-library retries. A TCP connect is the probe: it answers in milliseconds either
way and needs no client library (librdkafka would log every retry of a refused broker).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing this module stays cheap: the CLI catches its error for every command
    from ingest.config import FlowLensConfig

SERVICE_NAMES = {"postgres": "PostgreSQL", "kafka": "Kafka", "redis": "Redis"}


class ServiceUnavailable(RuntimeError):
    """A service a command needs does not answer; the message is one line for the user."""


def addresses(cfg: FlowLensConfig, service: str) -> list[tuple[str, int]]:
    """Host and port the config names for ``service`` (Kafka: every bootstrap server)."""
    if service == "postgres":
        return [(cfg.postgres.host, cfg.postgres.port)]
    if service == "redis":
        return [(cfg.redis.host, cfg.redis.port)]
    if service == "kafka":
        return cfg.kafka.servers
    raise ValueError(f"unknown service {service!r}; one of {sorted(SERVICE_NAMES)}")


def probe(cfg: FlowLensConfig, service: str, timeout: float = 2.0) -> str | None:
    """None when ``service`` accepts a TCP connection, else why not (one short phrase). A Kafka
    cluster answers when any of its brokers does: clients carry on while one is down."""
    reason = ""
    for host, port in addresses(cfg, service):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
    return reason


def needed(cfg: FlowLensConfig) -> list[str]:
    """The services the configured mode runs on."""
    return ["postgres"] + (["kafka"] if cfg.uses_kafka else []) + (["redis"] if cfg.uses_redis else [])


def start_command(services: Iterable[str]) -> str:
    """The stack command that starts ``services``."""
    return "flowlens stack up --mode full" if set(services) - {"postgres"} else "flowlens stack up"


def require(cfg: FlowLensConfig, services: Iterable[str], command: str) -> None:
    """Raise ServiceUnavailable naming every service of ``services`` that does not answer."""
    services = list(services)
    down = [(s, reason) for s in services if (reason := probe(cfg, s)) is not None]
    if down:
        what = ", ".join(f"{SERVICE_NAMES[s]} at {_where(cfg, s)} ({r})" for s, r in down)
        verb = "does not answer" if len(down) == 1 else "do not answer"
        raise ServiceUnavailable(f"{command}: {what} {verb}; start it with `{start_command(s for s, _ in down)}`")


def _where(cfg: FlowLensConfig, service: str) -> str:
    return ",".join(f"{host}:{port}" for host, port in addresses(cfg, service))
