"""A connection that does not come in time: PostgreSQL down, or every connection of the worker busy."""

from __future__ import annotations

import orjson
from psycopg_pool import PoolTimeout

from flowlens_dagster.api.errors import pool_timeout_response

TIMEOUT = PoolTimeout("couldn't get a connection after 5.00 sec")


def test_a_full_pool_is_503_busy_naming_the_setting_not_the_stack():
    reply = pool_timeout_response({"pool_size": 8, "pool_available": 0, "requests_waiting": 40}, TIMEOUT)
    body = orjson.loads(reply.body)
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert body["error"].startswith("PostgreSQL busy: all 8 connections") and "api.pg_pool_size" in body["error"]
    assert "stack up" not in body["error"]


def test_an_empty_pool_is_503_unavailable_with_the_command_that_starts_postgres():
    reply = pool_timeout_response({"pool_size": 0, "pool_available": 0}, TIMEOUT)
    body = orjson.loads(reply.body)
    assert reply.status_code == 503 and body["error"].startswith("PostgreSQL unavailable")
    assert "flowlens stack up" in body["error"]
