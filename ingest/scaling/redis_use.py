"""Auto mode's Redis decision, shared through PostgreSQL (``flowlens.redis_use``).

The query API decides at run time whether it uses Redis (:mod:`ingest.scaling.redis_rule`, applied
by ``flowlens_dagster/redis_mode.py``); every API process records its decision here at each check.
What the pipeline publishes on Redis (``changes:topology``, ``changes:alerts``, the API cache's
generation) is read only by an API that uses Redis, so the pipeline follows the same decision:

- ``standard`` and ``full``: Redis always; ``minimal``: never (the mode's static choice);
- ``auto``: Redis while at least one API process recorded "Redis" within the last
  ``STALE_CHECKS`` of its checks (a process gone without saying so stops counting); else the
  pipeline does not try Redis at all (the API, in process, polls ``flowlens.changes`` and takes the
  cache generation from ``flowlens.window_loads``).

PostgreSQL holds the record because it is the one service every mode has: a decision that Redis is
off cannot live in Redis.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ingest.config import FlowLensConfig

# A process that missed this many checks is gone (killed, or its PostgreSQL connection lost).
STALE_CHECKS = 3

RECORD_SQL = """
INSERT INTO flowlens.redis_use (instance, using_redis, reason, decided_at, seen_at)
VALUES (%(instance)s, %(using)s, %(reason)s, now(), now())
ON CONFLICT (instance) DO UPDATE SET
    using_redis = EXCLUDED.using_redis,
    seen_at = EXCLUDED.seen_at,
    reason = CASE WHEN flowlens.redis_use.using_redis = EXCLUDED.using_redis
                  THEN flowlens.redis_use.reason ELSE EXCLUDED.reason END,
    decided_at = CASE WHEN flowlens.redis_use.using_redis = EXCLUDED.using_redis
                      THEN flowlens.redis_use.decided_at ELSE EXCLUDED.decided_at END
"""
FORGET_SQL = "DELETE FROM flowlens.redis_use WHERE instance = %(instance)s"
IN_USE_SQL = """
SELECT coalesce(bool_or(using_redis), false) FROM flowlens.redis_use
WHERE seen_at > now() - make_interval(secs => %(stale)s)
"""


def api_instance() -> str:
    """This API process's name in ``flowlens.redis_use``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def record_params(instance: str, using_redis: bool, reason: str) -> dict[str, Any]:
    return {"instance": instance, "using": using_redis, "reason": reason}


def api_uses_redis(conn: Any, check_seconds: float) -> bool:
    """Whether an API process recorded "Redis" within its last ``STALE_CHECKS`` checks (``conn``: psycopg)."""
    return bool(conn.execute(IN_USE_SQL, {"stale": float(STALE_CHECKS * check_seconds)}).fetchone()[0])


def pipeline_uses_redis(cfg: FlowLensConfig, conn: Any) -> bool:
    """Whether the pipeline publishes on Redis now (see the module docstring); ``conn`` (psycopg) is
    read only in auto mode."""
    if cfg.mode != "auto":
        return cfg.uses_redis
    return api_uses_redis(conn, cfg.thresholds.redis.check_seconds)
