-- dramatiq-bbo 0007: the batch size each configuration learned, so that its next operation
-- starts from it instead of from the default.
--
-- Idempotent, like every file here.
--
-- bbo.learned_batch_sizes: one row per configuration — operation class, table (schema and
-- name), cursor column, database — written in the transaction that finishes an operation
-- whose batch size the optimizer set, and read when an operation of that configuration is
-- enqueued without an explicit batch_size. Arguments and organization are not part of the
-- key: what a row costs depends on the class's work and the table's rows, not on which rows
-- a scope selects, so one user's delete teaches the next user's. target_duration_seconds is
-- the job duration the size was aimed at (0.95 × the interval), so an operation with a
-- shorter interval starts proportionally smaller. A row is one configuration's latest
-- lesson, never history: it is not partitioned, and deleting it (or the whole table's
-- contents) only makes the next operation start from its default size again.

CREATE TABLE IF NOT EXISTS bbo.learned_batch_sizes (
    job_class_name          text NOT NULL,
    table_schema            text NOT NULL,
    table_name              text NOT NULL,
    column_name             text NOT NULL,
    database_name           text NOT NULL,
    batch_size              integer NOT NULL,
    target_duration_seconds double precision NOT NULL,
    operation_id            text NOT NULL,
    learned_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_class_name, table_schema, table_name, column_name, database_name),
    CONSTRAINT blbs_batch_size CHECK (batch_size > 0),
    CONSTRAINT blbs_target CHECK (target_duration_seconds > 0),
    CONSTRAINT blbs_operation_id_length CHECK (char_length(operation_id) BETWEEN 1 AND 64)
);

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0007', 'learned_sizes')
ON CONFLICT (version) DO NOTHING;
