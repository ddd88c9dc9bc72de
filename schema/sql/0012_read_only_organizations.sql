-- dramatiq-bbo 0012: read-only organizations (dramatiq_bbo.read_only, docs/organizations.md).
--
-- Idempotent, like every file here.
--
-- bbo.read_only_organizations lists the organizations whose operations must not run now (a
-- migration, a move to another cell, an unpaid bill): the default answer of the pluggable
-- check configure(organization_read_only=...). A row is the flag; deleting it lifts the flag.
-- The pipeline then holds each organization-scoped operation of a flagged organization with
-- hold_reason 'read-only organization[: <reason>]' for read_only_hold_seconds, and asks again
-- when the hold ends: that hold is what bbo.operations reports as paused_by 'read-only
-- organization' (whatever check is configured). Cell-local operations are never held.

CREATE TABLE IF NOT EXISTS bbo.read_only_organizations (
    organization_id bigint PRIMARY KEY,
    reason          text,
    since           timestamptz NOT NULL DEFAULT bbo.now(),
    CONSTRAINT roo_reason_length CHECK (reason IS NULL OR char_length(reason) <= 900)
);

-- bbo.operations as 0006 defined it (with bbo.now(), as 0011 made it), with one more answer of
-- paused_by, checked before 'health': a live hold of the read-only check. Same columns in the
-- same order, so CREATE OR REPLACE keeps every dependent object.
CREATE OR REPLACE VIEW bbo.operations AS
SELECT o.id,
       o.scope,
       o.database_name,
       o.organization_id,
       o.user_id,
       o.job_class_name,
       o.table_schema,
       o.table_name,
       o.column_name,
       s.status,
       CASE
           WHEN o.status = 2 THEN 'manual'
           WHEN o.status IN (0, 1) AND EXISTS (
               SELECT 1 FROM bbo.disabled_classes AS d WHERE d.job_class_name = o.job_class_name
           ) THEN 'disabled class'
           WHEN o.status IN (0, 1) AND o.on_hold_until > bbo.now()
                AND o.hold_reason LIKE 'read-only organization%' THEN 'read-only organization'
           WHEN o.status IN (0, 1) AND o.on_hold_until > bbo.now() THEN 'health'
       END AS paused_by,
       o.hold_reason,
       o.on_hold_until,
       o.processed_tuple_count,
       t.total_tuple_count,
       CASE
           WHEN o.status = 3 THEN 100.0
           WHEN coalesce(t.total_tuple_count, 0) = 0 THEN NULL
           ELSE least(100.0, round(100.0 * o.processed_tuple_count / t.total_tuple_count, 1))
       END::numeric(4, 1) AS progress_percent,
       round(rate.rows_per_second::numeric, 1)::float8 AS rows_per_second,
       CASE
           WHEN o.status = 3 THEN interval '0'
           WHEN o.status = 1 AND rate.rows_per_second > 0 AND t.total_tuple_count IS NOT NULL
           -- at most a century: a crawling rate must not overflow the interval type
           THEN make_interval(secs => least(round(
               greatest(t.total_tuple_count - o.processed_tuple_count, 0) / rate.rows_per_second
           ), 3155760000))
       END AS eta,
       o.batch_size,
       o.sub_batch_size,
       o.interval_seconds,
       js.jobs_succeeded,
       js.jobs_failed,
       js.jobs_running,
       js.last_job_at,
       o.created_at,
       o.started_at,
       o.finished_at,
       o.job_class_name || '/' || bbo.display_ident(o.table_schema) || '.'
           || bbo.display_ident(o.table_name) || '.' || o.column_name AS identifier,
       o.priority,
       o.pause_ms,
       o.affected_tuple_count,
       o.last_error_class,
       o.last_error_message,
       o.last_error_at,
       o.updated_at
FROM bbo.operation_rows AS o
CROSS JOIN LATERAL (
    SELECT CASE o.status
               WHEN 0 THEN 'queued' WHEN 1 THEN 'active' WHEN 2 THEN 'paused'
               WHEN 3 THEN 'finished' WHEN 4 THEN 'failed' WHEN 5 THEN 'cancelled'
           END AS status
) AS s
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN o.status = 3 THEN o.processed_tuple_count
               WHEN o.total_tuple_count IS NULL THEN NULL
               ELSE greatest(o.total_tuple_count, o.processed_tuple_count)
           END AS total_tuple_count
) AS t
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.status = 3) AS jobs_succeeded,
           count(*) FILTER (
               WHERE j.status = 2
                 AND coalesce(j.metrics -> 'split_into', '[]'::jsonb) = '[]'::jsonb
           ) AS jobs_failed,
           count(*) FILTER (WHERE j.status = 1) AS jobs_running,
           max(greatest(j.started_at, j.finished_at, j.heartbeat_at)) AS last_job_at
    FROM (
        SELECT c.status, c.metrics, c.started_at, c.finished_at, c.heartbeat_at
        FROM bbo.background_operation_jobs_cell_local AS c
        WHERE c.worker_id = o.local_id
        UNION ALL
        SELECT g.status, g.metrics, g.started_at, g.finished_at, g.heartbeat_at
        FROM bbo.background_operation_jobs AS g
        WHERE g.worker_id = o.org_id
    ) AS j
) AS js
CROSS JOIN LATERAL (
    SELECT (sum(r.processed_tuple_count)::float8
            / nullif(extract(epoch FROM max(r.ended_at) - min(r.started_at)), 0)::float8
           ) AS rows_per_second
    FROM (
        SELECT j.processed_tuple_count, j.started_at,
               coalesce(j.finished_at, CASE WHEN j.status = 1 THEN bbo.now() END) AS ended_at
        FROM (
            SELECT c.status, c.processed_tuple_count, c.started_at, c.finished_at
            FROM bbo.background_operation_jobs_cell_local AS c
            WHERE c.worker_id = o.local_id
            UNION ALL
            SELECT g.status, g.processed_tuple_count, g.started_at, g.finished_at
            FROM bbo.background_operation_jobs AS g
            WHERE g.worker_id = o.org_id
        ) AS j
        WHERE j.started_at IS NOT NULL AND (j.finished_at IS NOT NULL OR j.status = 1)
        ORDER BY 3 DESC
        LIMIT 10
    ) AS r
) AS rate;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0012', 'read_only_organizations')
ON CONFLICT (version) DO NOTHING;
