-- Named queries of moving an organization between cells (dramatiq_bbo.cells). Each step of a
-- move commits with the update of its record (bbo.organization_moves) in the same database.

-- name: cells_unfinished_move
-- description: the organization's unfinished move record in this database, in the given role (none or one: a unique index).
SELECT * FROM bbo.organization_moves
WHERE organization_id = %(organization_id)s AND role = %(role)s AND finished_at IS NULL;

-- name: cells_move_in_progress
-- description: the organization's unfinished move into this database: steering refuses to resume or cancel the inert copies meanwhile (the move gives them their statuses back itself). At the source, steering stays free: a copy made stale by it is discarded and made again.
SELECT move_id, source_name, target_name, step FROM bbo.organization_moves
WHERE organization_id = %(organization_id)s AND role = 'target' AND finished_at IS NULL;

-- name: cells_move_by_id
-- description: one side's record of a move, finished or not.
SELECT * FROM bbo.organization_moves WHERE move_id = %(move_id)s AND role = %(role)s;

-- name: cells_insert_move
-- description: the record of a move on one side, at its first step there.
INSERT INTO bbo.organization_moves
    (move_id, role, organization_id, source_name, target_name, step, operations, fingerprints)
VALUES (%(move_id)s, %(role)s, %(organization_id)s, %(source_name)s, %(target_name)s,
        %(step)s, %(operations)s::jsonb, %(fingerprints)s::jsonb)
RETURNING *;

-- name: cells_advance_move
-- description: a move record to its next step; operations first seen now join the map (the statuses seen first win), fingerprints are replaced when given; the last step of a side finishes it.
UPDATE bbo.organization_moves
SET step = %(step)s,
    operations = %(operations)s::jsonb || operations,
    fingerprints = coalesce(%(fingerprints)s::jsonb, fingerprints),
    updated_at = bbo.now(),
    finished_at = CASE WHEN %(finishes)s THEN bbo.now() END
WHERE move_id = %(move_id)s AND role = %(role)s
RETURNING *;

-- name: cells_forget_move
-- description: a side's record of a move whose copy was discarded (the copy is made again).
DELETE FROM bbo.organization_moves WHERE move_id = %(move_id)s AND role = %(role)s;

-- name: cells_pause_organization
-- description: pause the organization's unfinished operations (as a manual pause does: the running job stops at its next checkpoint); each one's id and status before, already paused ones included.
WITH before AS (
    SELECT id, partition, status
    FROM bbo.background_operation_workers
    WHERE organization_id = %(organization_id)s AND status IN (0, 1, 2)
    ORDER BY id
    FOR UPDATE
)
UPDATE bbo.background_operation_workers AS w
SET status = 2, lease_owner = NULL, lease_expires_at = NULL
FROM before
WHERE w.partition = before.partition AND w.id = before.id
RETURNING w.id, before.status;

-- name: cells_running_jobs
-- description: jobs of the organization's operations still running under a live lease (what a move waits for).
SELECT j.worker_id, j.id, j.lease_expires_at
FROM bbo.background_operation_jobs AS j
WHERE j.organization_id = %(organization_id)s
  AND j.status = 1 AND j.lease_expires_at > bbo.now();

-- name: cells_organization_operations
-- description: every operation row of the organization, as JSON (the copy's source).
SELECT to_jsonb(w) AS row
FROM bbo.background_operation_workers AS w
WHERE organization_id = %(organization_id)s
ORDER BY id;

-- name: cells_operations_jobs
-- description: every job row of the given operations, as JSON (their history, copied with them).
SELECT to_jsonb(j) AS row
FROM bbo.background_operation_jobs AS j
WHERE worker_id = ANY (%(ids)s::uuid[])
ORDER BY created_at, id;

-- name: cells_writable_columns
-- description: the columns of a table a copy may write (not generated, not dropped), in table order.
SELECT attname
FROM pg_catalog.pg_attribute
WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
ORDER BY attnum;

-- name: cells_table_oid
-- description: the oid of a table by its catalog (schema, name), as enqueue stored it.
SELECT c.oid::bigint
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s;

-- name: cells_insert_rows
-- description: rows given as a JSON array inserted into one of the state tables, the given columns only.
INSERT INTO {table} ({columns})
SELECT {columns} FROM jsonb_populate_recordset(NULL::{table}, %(rows)s::jsonb);

-- name: cells_lock_operations
-- description: the source operations about to be deleted, locked, with what the delete checks (status, updated_at as text, as it was fingerprinted).
SELECT id, status, to_jsonb(updated_at) #>> '{{}}' AS updated_at
FROM bbo.background_operation_workers
WHERE id = ANY (%(ids)s::uuid[])
ORDER BY id
FOR UPDATE;

-- name: cells_delete_jobs
-- description: the moved operations' jobs at the source (their copy committed at the target).
DELETE FROM bbo.background_operation_jobs WHERE worker_id = ANY (%(ids)s::uuid[]);

-- name: cells_delete_operations
-- description: the moved operations at the source (their copy committed at the target).
DELETE FROM bbo.background_operation_workers WHERE id = ANY (%(ids)s::uuid[]);

-- name: cells_resume_operation
-- description: an arrived operation as it was before the move: its status and hold, no lease.
UPDATE bbo.background_operation_workers
SET status = %(status)s, on_hold_until = %(on_hold_until)s::timestamptz,
    hold_reason = %(hold_reason)s, lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s
RETURNING *;

-- name: cells_left_behind
-- description: operations of the organization still at the source that the move did not copy (enqueued there during the move).
SELECT id FROM bbo.background_operation_workers
WHERE organization_id = %(organization_id)s AND NOT (id = ANY (%(ids)s::uuid[]))
ORDER BY id;

-- name: cells_organization_settled
-- description: the latest change to the organization's operations (a runner's end-of-job transaction may still write one after its job stopped running: the drain waits until this stands still).
SELECT max(updated_at) FROM bbo.background_operation_workers
WHERE organization_id = %(organization_id)s;

-- name: cells_try_move_lock
-- description: one process at a time moves an organization (a session lock on the source, released by the move or by the session's end).
SELECT pg_try_advisory_lock(hashtextextended('bbo.organization_move:' || %(organization_id)s::text, 0));

-- name: cells_move_unlock
-- description: release the organization's move lock.
SELECT pg_advisory_unlock(hashtextextended('bbo.organization_move:' || %(organization_id)s::text, 0));

-- name: cells_organization_tables
-- description: the tables the organization's operations walk (the target must have each before anything moves).
SELECT DISTINCT table_schema, table_name FROM bbo.background_operation_workers
WHERE organization_id = %(organization_id)s;
