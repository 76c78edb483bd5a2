-- 002: group roles. flowlens_writer: the ingest daemon and the pipeline (read/write data, create day
-- partitions through flowlens.ensure_day_partitions). flowlens_analyst: read-only SQL users.
-- Both are NOLOGIN groups; give people and services their own login role inside one, e.g.
--   CREATE ROLE alice LOGIN PASSWORD '...' IN ROLE flowlens_analyst;
-- Roles are cluster-wide, so creation is guarded (several databases, e.g. flowlens_test, share them);
-- grants are per database and idempotent.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'flowlens_writer') THEN
        BEGIN
            CREATE ROLE flowlens_writer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration created it at the same moment
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'flowlens_analyst') THEN
        BEGIN
            CREATE ROLE flowlens_analyst NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END $$;

GRANT USAGE ON SCHEMA flowlens TO flowlens_writer, flowlens_analyst;

-- Writer: data in and out, no DDL (schema changes go through migrations).
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA flowlens TO flowlens_writer;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA flowlens TO flowlens_writer;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA flowlens TO flowlens_writer;

-- Analyst: read everything, change nothing. ensure_day_partitions creates tables as the owner,
-- so only writers may call it.
GRANT SELECT ON ALL TABLES IN SCHEMA flowlens TO flowlens_analyst;
REVOKE EXECUTE ON FUNCTION flowlens.ensure_day_partitions(regclass, date, integer) FROM PUBLIC;

-- Objects created later by the role that runs migrations (tables of 010+, day partitions created
-- by ensure_day_partitions, which runs as that role) get the same grants automatically.
ALTER DEFAULT PRIVILEGES IN SCHEMA flowlens
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO flowlens_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA flowlens GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO flowlens_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA flowlens GRANT EXECUTE ON FUNCTIONS TO flowlens_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA flowlens GRANT SELECT ON TABLES TO flowlens_analyst;
