-- dramatiq-bbo 0005: what operators steer with — a kill switch per operation class — and the
-- last error of each operation, kept on its row.
--
-- Idempotent, like every file here.
--
-- bbo.disabled_classes: a class listed here runs no job. The scheduler does not dispatch its
-- operations, and a running job of the class stops at its next sub-batch boundary (its
-- checkpoint is committed; nothing is rolled back). Deleting the row (`dramatiq-bbo enable`)
-- lets the operations run again from their cursors. It is keyed by the class name as stored
-- in job_class_name, so a class can be disabled before any worker has imported it (a bad
-- deploy: disable first, then roll back).
--
-- last_error_*: the exception of the operation's most recent failed job attempt, so an
-- operator sees why an operation failed without searching its jobs (the job row keeps its own).

CREATE TABLE IF NOT EXISTS bbo.disabled_classes (
    job_class_name  text PRIMARY KEY,
    reason          text,
    disabled_by     text,
    disabled_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bdc_job_class_name_length CHECK (char_length(job_class_name) BETWEEN 1 AND 255),
    CONSTRAINT bdc_reason_length CHECK (reason IS NULL OR char_length(reason) <= 1000),
    CONSTRAINT bdc_disabled_by_length CHECK (disabled_by IS NULL
                                             OR char_length(disabled_by) <= 255)
);

ALTER TABLE bbo.background_operation_workers_cell_local
    ADD COLUMN IF NOT EXISTS last_error_class text,
    ADD COLUMN IF NOT EXISTS last_error_message text,
    ADD COLUMN IF NOT EXISTS last_error_at timestamptz;
ALTER TABLE bbo.background_operation_workers
    ADD COLUMN IF NOT EXISTS last_error_class text,
    ADD COLUMN IF NOT EXISTS last_error_message text,
    ADD COLUMN IF NOT EXISTS last_error_at timestamptz;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0005', 'steering')
ON CONFLICT (version) DO NOTHING;
