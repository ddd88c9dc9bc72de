-- dramatiq-bbo 0006: views an operator reads with psql, and that the library's own reading
-- API (dramatiq_bbo.operate.summaries) reads too, so every surface shows the same numbers.
--
-- Idempotent, like every file here: CREATE OR REPLACE VIEW only. A later file that changes a
-- view adds its columns at the end (Postgres refuses to drop or reorder a view's columns in
-- place) or drops and re-creates it.
--
--   bbo.operation_rows  both scopes' operation rows in one shape (id as text): the raw
--                       material of bbo.operations, not meant for reading directly.
--   bbo.operations      one row per operation of both scopes: status as text, who or what
--                       stops it (paused_by), progress, its jobs' counts, rate and ETA.
--   bbo.jobs            one row per job of both scopes, with its duration and rows/s.
--   bbo.failed_jobs     the jobs whose last attempt failed (a job replaced by the two halves of
--                       a split is not listed: its halves carry on).
--
-- paused_by says why an unfinished operation is not running now, in this order:
--   'manual'          paused by an operator (status paused; waits for a resume);
--   'disabled class'  its class is listed in bbo.disabled_classes (the kill switch);
--   'health'          held until on_hold_until (hold_reason names the indicator, or the check
--                     that held it: a class this worker cannot import, a changed table);
--   'read-only organization' is reserved for the organization moves of a later version (no
--                     table records it yet, so this file never reports it).
-- NULL when nothing stops it.
--
-- rows_per_second: rows processed by the operation's last ten jobs (finished, or running:
-- its committed sub-batches so far) divided by the wall-clock time from the first one's start
-- to the last one's end (now, for a running job), pauses between jobs included, so that eta
-- (what is left at that rate) is a time an operator can plan with.

-- A name as dramatiq-bbo shows it in logs and metrics (dramatiq_bbo.walk.catalog.quote_ident):
-- bare when it is a plain lower-case identifier, else double-quoted (keywords stay bare).
CREATE OR REPLACE FUNCTION bbo.display_ident(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN name ~ '^[a-z_][a-z0-9_$]*$' THEN name
                ELSE '"' || replace(name, '"', '""') || '"' END
$$;

-- The id in its own type, once per scope (local_id for cell-local rows, org_id for
-- organization-scoped ones, NULL in the other), so that the jobs of an operation are found
-- through the jobs tables' (worker_id, status) indexes.
CREATE OR REPLACE VIEW bbo.operation_rows AS
SELECT 'cell_local'::text AS scope,
       w.id::text AS id,
       w.partition,
       w.database_name,
       NULL::bigint AS organization_id,
       NULL::bigint AS user_id,
       w.job_class_name,
       w.table_schema,
       w.table_name,
       w.column_name,
       w.status,
       w.priority,
       w.batch_size,
       w.sub_batch_size,
       w.pause_ms,
       w.interval_seconds,
       w.total_tuple_count,
       w.processed_tuple_count,
       w.affected_tuple_count,
       w.on_hold_until,
       w.hold_reason,
       w.last_error_class,
       w.last_error_message,
       w.last_error_at,
       w.created_at,
       w.started_at,
       w.finished_at,
       w.updated_at,
       w.id AS local_id,
       NULL::uuid AS org_id
FROM bbo.background_operation_workers_cell_local AS w
UNION ALL
SELECT 'organization'::text,
       w.id::text,
       w.partition,
       w.database_name,
       w.organization_id,
       w.user_id,
       w.job_class_name,
       w.table_schema,
       w.table_name,
       w.column_name,
       w.status,
       w.priority,
       w.batch_size,
       w.sub_batch_size,
       w.pause_ms,
       w.interval_seconds,
       w.total_tuple_count,
       w.processed_tuple_count,
       w.affected_tuple_count,
       w.on_hold_until,
       w.hold_reason,
       w.last_error_class,
       w.last_error_message,
       w.last_error_at,
       w.created_at,
       w.started_at,
       w.finished_at,
       w.updated_at,
       NULL::bigint,
       w.id
FROM bbo.background_operation_workers AS w;

-- total_tuple_count: the estimate made at enqueue (the planner's for a scoped walk), never
-- below what was already processed; once finished, exactly what was processed. The jobs'
-- counts and rate are computed per row returned, after the caller's filters and LIMIT.
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
           WHEN o.status IN (0, 1) AND o.on_hold_until > now() THEN 'health'
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
               coalesce(j.finished_at, CASE WHEN j.status = 1 THEN now() END) AS ended_at
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


-- rows_per_second of a job: its rows over its duration (first start to end, retries included).
CREATE OR REPLACE VIEW bbo.jobs AS
SELECT u.*,
       round((u.processed_tuple_count
              / nullif(extract(epoch FROM u.duration), 0))::numeric, 1)::float8 AS rows_per_second
FROM (
SELECT 'cell_local'::text AS scope,
       j.worker_id::text AS operation_id,
       j.id::text AS id,
       w.database_name,
       NULL::bigint AS organization_id,
       w.job_class_name,
       CASE j.status WHEN 0 THEN 'pending' WHEN 1 THEN 'running' WHEN 2 THEN 'failed'
                     WHEN 3 THEN 'succeeded' END AS status,
       j.attempts,
       j.interruptions,
       j.batch_size,
       j.sub_batch_size,
       j.pause_ms,
       j.min_cursor,
       j.max_cursor,
       j.checkpoint_cursor,
       j.processed_tuple_count,
       j.affected_tuple_count,
       j.started_at,
       j.finished_at,
       coalesce(j.finished_at, CASE WHEN j.status = 1 THEN now() END) - j.started_at AS duration,
       j.exception_class,
       j.exception_message,
       coalesce(j.metrics -> 'split_into', '[]'::jsonb) <> '[]'::jsonb AS split,
       j.created_at,
       j.updated_at
FROM bbo.background_operation_jobs_cell_local AS j
LEFT JOIN bbo.background_operation_workers_cell_local AS w ON w.id = j.worker_id
UNION ALL
SELECT 'organization'::text,
       j.worker_id::text,
       j.id::text,
       w.database_name,
       j.organization_id,
       w.job_class_name,
       CASE j.status WHEN 0 THEN 'pending' WHEN 1 THEN 'running' WHEN 2 THEN 'failed'
                     WHEN 3 THEN 'succeeded' END,
       j.attempts,
       j.interruptions,
       j.batch_size,
       j.sub_batch_size,
       j.pause_ms,
       j.min_cursor,
       j.max_cursor,
       j.checkpoint_cursor,
       j.processed_tuple_count,
       j.affected_tuple_count,
       j.started_at,
       j.finished_at,
       coalesce(j.finished_at, CASE WHEN j.status = 1 THEN now() END) - j.started_at,
       j.exception_class,
       j.exception_message,
       coalesce(j.metrics -> 'split_into', '[]'::jsonb) <> '[]'::jsonb,
       j.created_at,
       j.updated_at
FROM bbo.background_operation_jobs AS j
LEFT JOIN bbo.background_operation_workers AS w ON w.id = j.worker_id
) AS u;

CREATE OR REPLACE VIEW bbo.failed_jobs AS
SELECT j.operation_id,
       j.id AS job_id,
       j.scope,
       j.database_name,
       j.organization_id,
       j.job_class_name,
       j.attempts,
       j.min_cursor,
       j.max_cursor,
       j.checkpoint_cursor,
       j.exception_class,
       j.exception_message,
       j.finished_at AS failed_at
FROM bbo.jobs AS j
WHERE j.status = 'failed' AND NOT j.split;

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0006', 'views')
ON CONFLICT (version) DO NOTHING;
