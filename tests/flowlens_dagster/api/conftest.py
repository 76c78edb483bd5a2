"""Fixtures for the query API: a small map in the test database and real API servers (uvicorn in a
thread, on a free port) over the real PostgreSQL and Redis of the test stack.

The map (``sample_map``): a database 10.0.0.1 used by two apps, a web front end using both apps, a user
and an IPv6 client of the web front end, and the database using the user's service (a cycle).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis as redis_lib
import requests
import uvicorn

from flowlens_dagster.api.app import create_app
from flowlens_dagster.api.auth import add_user
from ingest.config import FlowLensConfig

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse"
ASSETS = [
    # addr, name, hostname, owner, environment, tags, asn, country
    ("10.0.0.1", "db", "db1.example.com", "data", "prod", ["db"], 64512, "DE"),
    ("10.0.0.2", "app", "app1.example.com", "web", "prod", ["app"], 64512, "DE"),
    ("10.0.0.3", "app2", "app2.example.com", "web", "prod", ["app"], 64512, "DE"),
    ("10.0.1.10", "web", "web.example.com", "web", "prod", ["frontend"], 64513, "FR"),
    ("10.0.2.20", "laptop", "laptop-7.corp.example.com", "it", "office", [], 64514, "FR"),
    ("2001:db8::5", "v6client", "v6.example.org", None, None, [], None, None),
]
DEPENDENCIES = [
    # client, server, port, protocol
    ("10.0.0.2", "10.0.0.1", 5432, 6),
    ("10.0.0.3", "10.0.0.1", 5432, 6),
    ("10.0.1.10", "10.0.0.2", 8080, 6),
    ("10.0.1.10", "10.0.0.3", 8080, 6),
    ("10.0.2.20", "10.0.1.10", 443, 6),
    ("2001:db8::5", "10.0.1.10", 443, 6),
    ("10.0.0.1", "10.0.2.20", 9000, 17),  # the cycle
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """create_app(cfg) served by uvicorn in a thread of the test process."""

    def __init__(self, cfg: FlowLensConfig):
        self.cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"port": free_port()})})
        self.app = create_app(self.cfg)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.cfg.api.port, log_level="warning", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.cfg.api.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def get(self, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def login(self, username: str = "alice", password: str = PASSWORD) -> requests.Response:
        return requests.post(f"{self.url}/api/v1/login", json={"username": username, "password": password}, timeout=30)

    def token(self, username: str = "alice") -> str:
        reply = self.login(username)
        assert reply.status_code == 200, reply.text
        return reply.json()["token"]


def api_config(base: FlowLensConfig, mode: str = "full", **api) -> FlowLensConfig:
    return base.model_copy(update={"mode": mode, "api": base.api.model_copy(update=api)})


def fill_map(dsn: str) -> None:
    """The map above, with traffic in two windows and two stored changes."""
    with psycopg.connect(dsn) as conn:
        for addr, name, host, owner, env, tags, asn, country in ASSETS:
            conn.execute(
                """INSERT INTO flowlens.assets (addr, name, hostname, owner, environment, tags, known, asn, country,
                                                first_seen, last_seen, first_window, last_window)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (addr, name, host, owner, env, tags, owner is not None, asn, country, T0, T0, T0, T0),
            )
        for client, server, port, proto in DEPENDENCIES:
            conn.execute(
                """INSERT INTO flowlens.dependencies (client_addr, server_addr, server_port, protocol, first_seen,
                                                      last_seen, first_window, last_window)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
                (client, server, port, proto, T0, T0 + timedelta(minutes=5), T0, T0 + timedelta(minutes=5)),
            )
        conn.execute("SELECT flowlens.ensure_day_partitions('flowlens.flow_stats', %s, 1)", (T0.date(),))
        for minutes, nbytes in ((0, 1000), (5, 3000)):
            conn.execute(
                """INSERT INTO flowlens.flow_stats (window_start, client_addr, server_addr, server_port, protocol,
                                                    bytes, packets, flows, first_seen, last_seen)
                   VALUES (%s, '10.0.0.2', '10.0.0.1', 5432, 6, %s, 10, 2, %s, %s)""",
                (T0 + timedelta(minutes=minutes), nbytes, T0, T0),
            )
        for kind, subject in (("new_asset", "10.0.0.1"), ("new_asset", "10.0.0.2")):
            conn.execute(
                "INSERT INTO flowlens.changes (window_start, kind, subject, addr) VALUES (%s, %s, %s, %s)",
                (T0, kind, subject, subject),
            )


@pytest.fixture
def sample_map(clean_pg: str, flowlens_config: FlowLensConfig) -> str:
    fill_map(clean_pg)
    for role, name in (("admin", "alice"), ("viewer", "victor")):
        add_user(clean_pg, name, PASSWORD, role)
    return clean_pg


@pytest.fixture
def api_redis(flowlens_config: FlowLensConfig) -> Callable[[int], redis_lib.Redis]:
    """Clients of the API's Redis databases (2 and 3 by default), emptied before the test."""
    clients: list[redis_lib.Redis] = []

    def client(db: int) -> redis_lib.Redis:
        made = redis_lib.Redis.from_url(flowlens_config.redis.url(db))
        clients.append(made)
        return made

    for db in (flowlens_config.api.cache_db, flowlens_config.api.session_db):
        client(db).flushdb()
    yield client
    for made in clients:
        made.close()


@pytest.fixture
def api(sample_map: str, flowlens_config: FlowLensConfig, api_redis) -> Iterator[ApiServer]:
    """A full-mode API (Redis cache and sessions) over the sample map."""
    with ApiServer(api_config(flowlens_config)) as server:
        yield server
