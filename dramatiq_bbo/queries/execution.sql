-- Named queries of the job runner (dramatiq_bbo.jobs.run): creating a job from the
-- operation's resume cursor, claiming it under a lease, finishing it, and the operation's
-- own transitions.
--
-- {operations} and {jobs} are filled by dramatiq_bbo.queries.query() with the bbo tables of
-- the operation's scope (dramatiq_bbo.state.store.tables_for); every value is a parameter.

-- name: execution_insert_job
-- description: Create a job over an inclusive keyset range (a new batch, or half of a split one): pending, or already claimed by %(lease_owner)s (one attempt, under a lease, as execution_claim_job would; the caller holds the operation's row lock and checked no other job runs); {scope_columns}/{scope_values} add the organization_id of an organization-scoped job (dramatiq_bbo.state.store.insert_job).
INSERT INTO {jobs} (
    partition, worker_id, worker_partition, status, batch_size, sub_batch_size, pause_ms,
    min_cursor, max_cursor, metrics, attempts, lease_owner, lease_expires_at, heartbeat_at,
    started_at{scope_columns}
) VALUES (
    %(partition)s, %(worker_id)s, %(worker_partition)s,
    CASE WHEN %(lease_owner)s::text IS NULL THEN 0 ELSE 1 END,
    %(batch_size)s, %(sub_batch_size)s, %(pause_ms)s, %(min_cursor)s::jsonb,
    %(max_cursor)s::jsonb, %(metrics)s::jsonb,
    CASE WHEN %(lease_owner)s::text IS NULL THEN 0 ELSE 1 END,
    %(lease_owner)s::text,
    CASE WHEN %(lease_owner)s::text IS NOT NULL
         THEN bbo.now() + make_interval(secs => %(lease_seconds)s::float8) END,
    CASE WHEN %(lease_owner)s::text IS NOT NULL THEN bbo.now() END,
    CASE WHEN %(lease_owner)s::text IS NOT NULL THEN bbo.now() END{scope_values}
)
RETURNING *;

-- name: execution_advance_operation
-- description: Move the operation's resume cursor past the range just handed to a job, and refine the size estimate with what that range says: rows remain after a full batch, none after one that ends at max_cursor (one job at a time, so processed_tuple_count counts every earlier job). The same write records a job claimed at creation (last_run_at, %(claimed)s) and the optimizer's new batch size (%(set_batch_size)s, else unchanged).
UPDATE {operations}
SET next_cursor = %(next_cursor)s::jsonb,
    total_tuple_count = CASE
        WHEN total_tuple_count IS NULL THEN NULL
        WHEN %(next_cursor)s::jsonb = max_cursor
        THEN least(greatest(total_tuple_count, processed_tuple_count + 1),
                   processed_tuple_count + %(batch_size)s)
        ELSE greatest(total_tuple_count, processed_tuple_count + %(batch_size)s + 1)
    END,
    batch_size = coalesce(%(set_batch_size)s::integer, batch_size),
    last_run_at = CASE WHEN %(claimed)s::boolean THEN bbo.now() ELSE last_run_at END,
    updated_at = bbo.now()
WHERE partition = %(partition)s AND id = %(id)s
RETURNING *;

-- name: execution_job_by_lease_owner
-- description: The job a runner's lease owner holds, if any (a job created and claimed in a transaction whose COMMIT answer was lost with the connection).
SELECT * FROM {jobs} WHERE worker_id = %(worker_id)s AND lease_owner = %(lease_owner)s;

-- name: execution_claim_job
-- description: Take a job to run (pending, failed, or running with an expired lease) of an existing operation: one more attempt, under a lease. Run after the operation row is locked (lock order: operation, then job).
-- A running job whose lease expired was interrupted (its runner died or froze): taking it
-- over counts an interruption and refunds that run's attempt, up to max_interruptions.
-- Refused while another job of the operation runs under a live lease (one job per operation,
-- whoever runs it), and, for a stage message (stage_token given), while another stage holds
-- the operation's live stage lease (run_to_completion took the operation over).
UPDATE {jobs}
SET status = 1,
    attempts = attempts
        + CASE WHEN status = 1 AND interruptions < %(max_interruptions)s THEN 0 ELSE 1 END,
    interruptions = interruptions + CASE WHEN status = 1 THEN 1 ELSE 0 END,
    lease_owner = %(lease_owner)s,
    lease_expires_at = bbo.now() + make_interval(secs => %(lease_seconds)s),
    heartbeat_at = bbo.now(),
    started_at = coalesce(started_at, bbo.now()),
    finished_at = NULL,
    exception_class = NULL,
    exception_message = NULL,
    updated_at = bbo.now()
WHERE worker_id = %(worker_id)s
  AND id = %(id)s
  AND (status IN (0, 2) OR (status = 1 AND lease_expires_at < bbo.now()))
  AND EXISTS (SELECT 1 FROM {operations} WHERE id = %(worker_id)s)
  AND NOT EXISTS (
      SELECT 1 FROM {jobs} AS other
      WHERE other.worker_id = %(worker_id)s AND other.id <> %(id)s
        AND other.status = 1 AND other.lease_expires_at >= bbo.now()
  )
  AND NOT EXISTS (
      SELECT 1 FROM {operations} AS o
      WHERE o.id = %(worker_id)s AND %(stage_token)s::text IS NOT NULL
        AND o.lease_expires_at > bbo.now() AND o.lease_owner IS DISTINCT FROM %(stage_token)s::text
  )
RETURNING *;

-- name: execution_job_by_id
-- description: One job of an operation, whatever its partition.
SELECT * FROM {jobs} WHERE worker_id = %(worker_id)s AND id = %(id)s;

-- name: execution_touch_claimed_operation
-- description: Record that a job of the operation started, if this runner just claimed it (the scheduler runs the least recently run first), and renew the stage lease the claiming stage holds.
UPDATE {operations}
SET last_run_at = bbo.now(),
    lease_expires_at = CASE
        WHEN %(stage_token)s::text IS NOT NULL AND lease_owner = %(stage_token)s::text
        THEN bbo.now() + make_interval(secs => %(lease_seconds)s)
        ELSE lease_expires_at
    END,
    updated_at = bbo.now()
WHERE id = %(worker_id)s
  AND EXISTS (
      SELECT 1 FROM {jobs}
      WHERE worker_id = %(worker_id)s AND id = %(id)s AND lease_owner = %(lease_owner)s
  );

-- name: execution_other_live_job
-- description: Whether another job of the operation runs under a live lease (read after locking the operation row, before creating a job to run at once).
SELECT EXISTS (
    SELECT 1 FROM {jobs}
    WHERE worker_id = %(worker_id)s AND status = 1 AND lease_expires_at >= bbo.now()
);

-- name: execution_finish_job
-- description: End a run of a job (succeeded, failed, or back to pending), if this runner still holds it; an interruption (worker shutdown) is counted.
UPDATE {jobs}
SET status = %(status)s,
    attempts = attempts - %(refund)s,
    interruptions = interruptions + %(interruption)s,
    lease_owner = NULL,
    lease_expires_at = NULL,
    finished_at = CASE WHEN %(status)s IN (2, 3) THEN bbo.now() END,
    exception_class = %(exception_class)s,
    exception_message = %(exception_message)s,
    metrics = %(metrics)s::jsonb,
    updated_at = bbo.now()
WHERE partition = %(partition)s AND id = %(id)s AND lease_owner = %(lease_owner)s
RETURNING *;

-- name: execution_resumable_job
-- description: The oldest job to run again: pending, failed with attempts left, or running with an expired lease.
SELECT *
FROM {jobs}
WHERE worker_id = %(worker_id)s
  AND (status = 0
       OR (status = 2 AND attempts < %(max_attempts)s)
       OR (status = 1 AND lease_expires_at < bbo.now()))
ORDER BY created_at, id
LIMIT 1;

-- name: execution_live_job
-- description: A job of the operation running elsewhere under a lease that has not expired.
SELECT *, greatest(extract(epoch FROM lease_expires_at - bbo.now()), 0)::float8 AS lease_left
FROM {jobs}
WHERE worker_id = %(worker_id)s AND status = 1 AND lease_expires_at >= bbo.now()
LIMIT 1;

-- name: execution_job_counts
-- description: Jobs of an operation, and those failed for good (no attempt left, not replaced by split halves; a job too small to split, split_into [], stays failed).
SELECT count(*)::bigint AS total,
       count(*) FILTER (
           WHERE status = 2 AND attempts >= %(max_attempts)s
             AND coalesce(metrics -> 'split_into', '[]'::jsonb) = '[]'::jsonb
       )::bigint AS failed
FROM {jobs}
WHERE worker_id = %(worker_id)s;

-- name: execution_set_job_sub_batch_size
-- description: Shrink a job's sub-batch size before retrying it after a timeout.
UPDATE {jobs}
SET sub_batch_size = %(sub_batch_size)s, updated_at = bbo.now()
WHERE partition = %(partition)s AND id = %(id)s
RETURNING *;

-- name: execution_activate_operation
-- description: queued -> active when its first job is about to run; started_at is set once.
UPDATE {operations}
SET status = 1, started_at = coalesce(started_at, bbo.now()), updated_at = bbo.now()
WHERE id = %(id)s AND status = 0
RETURNING *;

-- name: execution_end_operation
-- description: active -> finished or failed once its range is exhausted (or too many jobs failed); a finished operation's size is then known: what it processed.
UPDATE {operations}
SET status = %(status)s, finished_at = bbo.now(), lease_owner = NULL, lease_expires_at = NULL,
    total_tuple_count = CASE WHEN %(status)s = 3 THEN processed_tuple_count
                             ELSE total_tuple_count END,
    updated_at = bbo.now()
WHERE id = %(id)s AND status = 1
RETURNING *;

-- name: execution_record_last_error
-- description: Keep the exception of a failed job attempt on its operation's row, so an operator sees why without searching the jobs.
UPDATE {operations}
SET last_error_class = %(exception_class)s,
    last_error_message = %(exception_message)s,
    last_error_at = bbo.now()
WHERE partition = %(partition)s AND id = %(id)s;

-- name: ending_all_rows_done
-- description: A piece of a WHERE clause, not a statement: the operation `o` walked its whole range (its last job ended at its max_cursor) and no job of it is left to run or failed (a job split in two halves is replaced by them).
o.started_at IS NOT NULL
  AND o.max_cursor IS NOT NULL
  AND o.next_cursor = o.max_cursor
  AND NOT EXISTS (
      SELECT 1 FROM {jobs} AS j
      WHERE j.worker_id = o.id
        AND (j.status IN (0, 1)
             OR (j.status = 2
                 AND coalesce(j.metrics -> 'split_into', '[]'::jsonb) = '[]'::jsonb))
  )

-- name: execution_finish_cancelled_after_last_row
-- description: A cancel that came after the operation's last row was processed (its last job was still running, or the orchestrator had not ended it yet) is a finish: nothing was left to cancel.
UPDATE {operations} AS o
SET status = 3, total_tuple_count = o.processed_tuple_count, updated_at = bbo.now()
WHERE o.id = %(id)s AND o.status = 5 AND {ending_all_rows_done}
RETURNING *;

-- name: execution_finish_exhausted
-- description: active -> finished right after its last job succeeded, when its range is walked and no job is left to run or failed (so it does not stay active one more interval for an orchestrator to find nothing); its size is then known: what it processed.
UPDATE {operations} AS o
SET status = 3, finished_at = bbo.now(), lease_owner = NULL, lease_expires_at = NULL,
    total_tuple_count = o.processed_tuple_count, updated_at = bbo.now()
WHERE o.id = %(id)s AND o.status = 1 AND {ending_all_rows_done}
RETURNING *;

-- name: execution_operation_table_oid
-- description: The oid of the relation the operation's stored schema and table name name now (none when it is gone): its table's identity, read in the claim's round trip and compared with the oid enqueue validated (dramatiq_bbo.jobs.instance.build_operation).
SELECT c.oid::bigint AS oid
FROM {operations} AS o
JOIN pg_catalog.pg_namespace AS n ON n.nspname = o.table_schema
JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = o.table_name
WHERE o.id = %(worker_id)s;

-- name: execution_lock_operation
-- description: The operation of the job a claim takes, row-locked first (the library's one lock order: the operation row, then its job rows).
SELECT * FROM {operations} WHERE id = %(worker_id)s FOR UPDATE;
