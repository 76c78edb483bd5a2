-- 013: auto mode's Redis decision, shared. Each query API process records here whether it uses Redis
-- now (its run-time decision, flowlens_dagster/redis_mode.py), refreshed at every check; the pipeline
-- reads it to publish on Redis (changes:topology, changes:alerts, the API cache generation) only while
-- an API process uses it. Idempotent like every migration; default privileges (002) grant it to the roles.

CREATE TABLE IF NOT EXISTS flowlens.redis_use (
    instance     text        PRIMARY KEY,  -- API process (hostname:pid)
    using_redis  boolean     NOT NULL,
    reason       text        NOT NULL,     -- why, as the decision logged it
    decided_at   timestamptz NOT NULL,     -- the last switch (or the process's start)
    seen_at      timestamptz NOT NULL      -- the last check: older rows are processes gone
);
