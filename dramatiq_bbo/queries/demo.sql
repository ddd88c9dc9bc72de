-- Named queries of `dramatiq-bbo demo` (dramatiq_bbo.demo): the demo's own schema and table,
-- and the counts its summary checks. Nothing here touches the bbo tables but the look-up of
-- operations a previous, interrupted demo left unfinished.
--
-- The demo data lives in schema bbo_demo, marked by its comment, so that the demo drops only
-- a schema it made itself.

-- name: demo_schema_comment
-- description: The comment of schema bbo_demo (one row when the schema exists).
SELECT coalesce(obj_description(n.oid, 'pg_namespace'), '') AS comment
FROM pg_namespace n
WHERE n.nspname = 'bbo_demo';

-- name: demo_drop_schema
-- description: Drop the demo's schema and its table.
DROP SCHEMA IF EXISTS bbo_demo CASCADE;

-- name: demo_create_schema
-- description: Create the demo's schema.
CREATE SCHEMA bbo_demo;

-- name: demo_mark_schema
-- description: Mark the schema as the demo's own, so a later demo may drop it.
COMMENT ON SCHEMA bbo_demo IS 'dramatiq-bbo demo data: dropped when the demo ends';

-- name: demo_create_table
-- description: The demo table. Autovacuum is off on it so that the demo's one health hold is the scripted one.
CREATE TABLE bbo_demo.todos (
    id bigint NOT NULL,
    user_id integer NOT NULL,
    done boolean NOT NULL,
    updated_at timestamptz NOT NULL
) WITH (autovacuum_enabled = false);

-- name: demo_fill_table
-- description: Fill the table with %(rows)s todos: ~70% done, last updated 0..729 days before %(now)s, spread over 1,000 users.
INSERT INTO bbo_demo.todos (id, user_id, done, updated_at)
SELECT i,
       1 + mod(i * 7, 1000)::integer,
       mod(i * 104729, 10) < 7,
       %(now)s::timestamptz - mod(i * 7919, 730) * interval '1 day' - mod(i, 86400) * interval '1 second'
FROM generate_series(1, %(rows)s::bigint) AS i;

-- name: demo_add_primary_key
-- description: The index the keyset walk needs (built after the fill: faster than maintaining it row by row).
ALTER TABLE bbo_demo.todos ADD PRIMARY KEY (id);

-- name: demo_analyze
-- description: Fresh statistics: enqueue estimates the total from pg_class.reltuples.
ANALYZE bbo_demo.todos;

-- name: demo_counts
-- description: All rows, and the rows the operation must delete (done, last updated before the cutoff).
SELECT count(*)::bigint AS rows,
       (count(*) FILTER (WHERE done AND updated_at < %(cutoff)s::timestamptz))::bigint AS matching
FROM bbo_demo.todos;

-- name: demo_unfinished_operations
-- description: Demo operations an interrupted demo left queued, active or paused.
SELECT id
FROM bbo.background_operation_workers_cell_local
WHERE database_name = %(database_name)s AND job_class_name = %(class_name)s
  AND status IN (0, 1, 2);

-- name: demo_schemas_present
-- description: Whether schemas bbo and dramatiq exist (before the demo migrates: it drops at the end only what it installed).
SELECT to_regnamespace('bbo') IS NOT NULL AS bbo,
       to_regnamespace('dramatiq') IS NOT NULL AS dramatiq;

-- name: demo_foreign_rows
-- description: Operations that are not the demo's (either scope) and queue messages of other queues: anything the demo must not drop.
SELECT (SELECT count(*) FROM bbo.background_operation_workers_cell_local
         WHERE NOT (database_name = %(database_name)s AND job_class_name = %(class_name)s))
     + (SELECT count(*) FROM bbo.background_operation_workers) AS operations,
       (SELECT count(*) FROM dramatiq.queue
         WHERE NOT (queue_name = ANY(%(queues)s::text[]))) AS messages;

-- name: demo_delete_jobs
-- description: The jobs of the demo's operations (class and database of the demo).
DELETE FROM bbo.background_operation_jobs_cell_local
WHERE worker_id IN (
    SELECT id FROM bbo.background_operation_workers_cell_local
    WHERE database_name = %(database_name)s AND job_class_name = %(class_name)s
);

-- name: demo_delete_operations
-- description: The demo's operations (class and database of the demo), after their jobs.
DELETE FROM bbo.background_operation_workers_cell_local
WHERE database_name = %(database_name)s AND job_class_name = %(class_name)s;

-- name: demo_delete_messages
-- description: The dramatiq messages of the demo's queues (its queue, the delay and dead-letter queues).
DELETE FROM dramatiq.queue WHERE queue_name = ANY(%(queues)s::text[]);

-- name: demo_drop_bbo_schema
-- description: Drop schema bbo, when the demo installed it and nothing but the demo's rows is in it.
DROP SCHEMA IF EXISTS bbo CASCADE;

-- name: demo_drop_dramatiq_schema
-- description: Drop schema dramatiq, when the demo installed it and only the demo's messages are in it.
DROP SCHEMA IF EXISTS dramatiq CASCADE;
