-- dramatiq-bbo 0002: dramatiq-pg's own message queue (schema "dramatiq").
--
-- dramatiq-pg ships this DDL as a psql script that is not idempotent (CREATE TYPE, CREATE
-- TABLE without IF NOT EXISTS) and whose CLI does not run on Python >= 3.12. This file is the
-- same catalog written idempotently; tests/integration/test_dramatiq_schema.py proves that it
-- matches what dramatiq_pg.schema.generate_init_sql() creates, column for column.

CREATE SCHEMA IF NOT EXISTS dramatiq;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'dramatiq' AND t.typname = 'state'
    ) THEN
        CREATE TYPE dramatiq.state AS ENUM ('queued', 'consumed', 'rejected', 'done');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS dramatiq.queue (
    message_id  uuid PRIMARY KEY,
    queue_name  text NOT NULL DEFAULT 'default',
    "state"     dramatiq.state,
    mtime       timestamp with time zone DEFAULT (now() AT TIME ZONE 'UTC'),
    message     jsonb,
    "result"    jsonb,
    result_ttl  timestamp with time zone
);

CREATE INDEX IF NOT EXISTS queue_state_mtime_idx ON dramatiq.queue ("state", mtime);

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0002', 'dramatiq_queue')
ON CONFLICT (version) DO NOTHING;
