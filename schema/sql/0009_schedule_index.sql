-- dramatiq-bbo 0009: when each operation is next due (next_run_at), and the index the
-- scheduler's choice reads in dispatch order.
--
-- Idempotent, like every file here.
--
-- next_run_at is the moment the operation is next ready for a job, as far as its own row
-- says: the latest of its creation, the end of its hold (on_hold_until), the end of its
-- stage lease (lease_expires_at: a stage message or runner carries it until then) and one
-- interval after its last job started (last_run_at + interval_seconds). An operation is
-- schedulable when it is queued or active and next_run_at <= now() (and it has no live job,
-- and its class is not disabled: those live in other tables, checked per candidate).
--
-- A stored generated column: Postgres computes it in the statement that writes any of those
-- columns, whoever writes them (the library, an operator's psql), with no trigger; a write
-- that changes none of them (a sub-batch's counters) leaves it unchanged, so that update
-- stays HOT. AT TIME ZONE 'UTC' on both sides makes the sum immutable (timestamptz +
-- interval is only stable, because of days and months; a pure seconds interval in UTC is the
-- same sum in every time zone). Adding the column rewrites both operation tables once.
--
-- *_schedule serves both the filter and the order of pipeline_schedulable_operations: per
-- database, per priority (highest first), the operations by next_run_at, unfinished ones
-- only. It replaces *_schedulable (0001), whose order (on_hold_until before priority) the
-- scheduler could not use without sorting every unfinished operation.

ALTER TABLE bbo.background_operation_workers_cell_local
    ADD COLUMN IF NOT EXISTS next_run_at timestamptz GENERATED ALWAYS AS (
        greatest(created_at, on_hold_until, lease_expires_at,
                 (last_run_at AT TIME ZONE 'UTC'
                  + make_interval(secs => interval_seconds)) AT TIME ZONE 'UTC')
    ) STORED;

ALTER TABLE bbo.background_operation_workers
    ADD COLUMN IF NOT EXISTS next_run_at timestamptz GENERATED ALWAYS AS (
        greatest(created_at, on_hold_until, lease_expires_at,
                 (last_run_at AT TIME ZONE 'UTC'
                  + make_interval(secs => interval_seconds)) AT TIME ZONE 'UTC')
    ) STORED;

CREATE INDEX IF NOT EXISTS bowcl_schedule
    ON bbo.background_operation_workers_cell_local (database_name, priority DESC, next_run_at)
    WHERE status IN (0, 1);

CREATE INDEX IF NOT EXISTS bow_schedule
    ON bbo.background_operation_workers (database_name, priority DESC, next_run_at)
    WHERE status IN (0, 1);

DROP INDEX IF EXISTS bbo.bowcl_schedulable;
DROP INDEX IF EXISTS bbo.bow_schedulable;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0009', 'schedule_index')
ON CONFLICT (version) DO NOTHING;
