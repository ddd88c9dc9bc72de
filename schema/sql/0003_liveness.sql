-- dramatiq-bbo 0003: liveness — interruptions counted apart from attempts, and the lease
-- check a sub-batch's checkpoint makes before it commits.
--
-- Idempotent: applying this file twice, by `dramatiq-bbo migrate` or by `psql -f`, gives the
-- same catalog.
--
-- interruptions: how many runs of the job ended because its runner stopped (a worker shutdown
-- handing the job over, or a lease that expired because the runner died or froze). Such a run
-- is not a failed attempt: its attempt is refunded. Past the max_interruptions setting an
-- interruption counts as a failed attempt, so a job that kills its workers still ends.

ALTER TABLE bbo.background_operation_jobs_cell_local
    ADD COLUMN IF NOT EXISTS interruptions smallint NOT NULL DEFAULT 0;
ALTER TABLE bbo.background_operation_jobs
    ADD COLUMN IF NOT EXISTS interruptions smallint NOT NULL DEFAULT 0;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'bojcl_interruptions'
          AND conrelid = 'bbo.background_operation_jobs_cell_local'::regclass
    ) THEN
        ALTER TABLE bbo.background_operation_jobs_cell_local
            ADD CONSTRAINT bojcl_interruptions CHECK (interruptions >= 0);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'boj_interruptions'
          AND conrelid = 'bbo.background_operation_jobs'::regclass
    ) THEN
        ALTER TABLE bbo.background_operation_jobs
            ADD CONSTRAINT boj_interruptions CHECK (interruptions >= 0);
    END IF;
END
$$;

-- A sub-batch does not keep its job row locked (a heartbeat must renew the job's lease while
-- a long sub-batch runs); instead its checkpoint, sent in one round trip with COMMIT, updates
-- the job row only while this runner still holds the lease, and calls this function with
-- whether it did. Raising here aborts the transaction, so the COMMIT queued behind it never
-- runs and the sub-batch is rolled back: a runner that lost its lease applies nothing.
-- SQLSTATE 'LEASE' lets the runner tell this from any other error.
CREATE OR REPLACE FUNCTION bbo.assert_lease_held(held boolean, job_id text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT coalesce(held, false) THEN
        RAISE EXCEPTION 'job % is no longer held by this runner: another runner took it over after its lease expired', job_id
            USING ERRCODE = 'LEASE';
    END IF;
    RETURN true;
END
$$;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0003', 'liveness')
ON CONFLICT (version) DO NOTHING;
