-- Named queries of operator steering (dramatiq_bbo.operate): the kill switch per operation
-- class (bbo.disabled_classes), retrying the failed jobs of an operation, changing its sizes
-- live, and the stop check a running job makes between sub-batches.
--
-- {operations} and {jobs} are filled with the bbo tables of one scope. Lock order: the
-- operation row first (the caller locks it), then its job rows.

-- name: steering_run_state
-- description: What a running job re-reads between sub-batches: the operation's status, whether its class is disabled (the kill switch stops it at the checkpoint), and its organization's read-only reason ({read_only_reason}: a read_only_* piece).
SELECT o.status,
       EXISTS (SELECT 1 FROM bbo.disabled_classes AS d
               WHERE d.job_class_name = o.job_class_name) AS class_disabled,
       {read_only_reason} AS read_only_reason
FROM {operations} AS o
WHERE o.id = %(id)s;

-- name: steering_disable_class
-- description: Disable a class (nothing when it already is: the caller then reads the row that is there).
INSERT INTO bbo.disabled_classes (job_class_name, reason, disabled_by)
VALUES (%(job_class_name)s, %(reason)s, %(disabled_by)s)
ON CONFLICT (job_class_name) DO NOTHING
RETURNING job_class_name, reason, disabled_by, disabled_at;

-- name: steering_enable_class
-- description: Enable a class again: its row goes; the removed row, or nothing when it was not disabled.
DELETE FROM bbo.disabled_classes
WHERE job_class_name = %(job_class_name)s
RETURNING job_class_name, reason, disabled_by, disabled_at;

-- name: steering_disabled_classes
-- description: The disabled classes (one, or all when job_class_name is NULL), by name, each with its unfinished operations in this database (both scopes).
SELECT d.job_class_name, d.reason, d.disabled_by, d.disabled_at,
       (SELECT count(*) FROM bbo.background_operation_workers AS o
        WHERE o.job_class_name = d.job_class_name AND o.status IN (0, 1, 2))
     + (SELECT count(*) FROM bbo.background_operation_workers_cell_local AS o
        WHERE o.job_class_name = d.job_class_name AND o.status IN (0, 1, 2))
       AS unfinished_operations
FROM bbo.disabled_classes AS d
WHERE %(job_class_name)s::text IS NULL OR d.job_class_name = %(job_class_name)s::text
ORDER BY d.job_class_name;

-- name: steering_runnable_of_class
-- description: Queued or active operations of one class, highest priority first: those enable() wakes.
SELECT *
FROM {operations}
WHERE job_class_name = %(job_class_name)s AND status IN (0, 1)
ORDER BY priority DESC, last_run_at NULLS FIRST, created_at
LIMIT %(limit)s;

-- name: steering_requeue_failed_jobs
-- description: Failed jobs of the operation (those not replaced by split halves) back to pending with a fresh set of attempts, from their checkpoints; the retry is counted in metrics.
UPDATE {jobs}
SET status = 0,
    attempts = 0,
    interruptions = 0,
    lease_owner = NULL,
    lease_expires_at = NULL,
    finished_at = NULL,
    metrics = metrics || jsonb_build_object(
        'retries', coalesce((metrics ->> 'retries')::int, 0) + 1,
        'retried_at', bbo.now()),
    updated_at = bbo.now()
WHERE worker_id = %(worker_id)s
  AND status = 2
  AND coalesce(metrics -> 'split_into', '[]'::jsonb) = '[]'::jsonb
RETURNING id;

-- name: steering_reactivate
-- description: failed -> active (queued if it never started), from its stored cursor: schedulable at once.
UPDATE {operations}
SET status = CASE WHEN started_at IS NULL THEN 0 ELSE 1 END,
    finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL, last_run_at = NULL,
    updated_at = bbo.now()
WHERE id = %(id)s AND status = 4
RETURNING *;

-- name: steering_update_sizes
-- description: New sizes for the operation's next jobs (the caller checked bounds and order under the row lock); the optimizer's range widens to hold the batch size an operator chose.
UPDATE {operations}
SET batch_size = %(batch_size)s,
    sub_batch_size = %(sub_batch_size)s,
    pause_ms = %(pause_ms)s,
    interval_seconds = %(interval_seconds)s,
    min_batch_size = least(min_batch_size, %(batch_size)s),
    max_batch_size = greatest(max_batch_size, %(batch_size)s),
    updated_at = bbo.now()
WHERE id = %(id)s
RETURNING *;

-- name: steering_update_waiting_jobs
-- description: The new sub-batch size and pause for the operation's jobs waiting to run again (pending, or failed: a retry resumes them), each sub-batch kept within its job's batch; a running job keeps the sizes it started with.
UPDATE {jobs}
SET sub_batch_size = least(%(sub_batch_size)s, batch_size),
    pause_ms = %(pause_ms)s,
    updated_at = bbo.now()
WHERE worker_id = %(worker_id)s AND status IN (0, 2)
RETURNING id;

-- name: steering_release_waiting_stage
-- description: After a shorter interval was set: drop the lease of a stage message waiting out the old interval (no job in flight, a pipeline token, not run_to_completion's), so the scheduler's next pass hands the operation on once the new interval has passed; the old message, when due, finds the operation handed on or acts no earlier than the old interval.
UPDATE {operations} AS o
SET lease_owner = NULL, lease_expires_at = NULL
WHERE o.id = %(id)s
  AND o.status IN (0, 1)
  AND o.lease_expires_at > bbo.now()
  AND o.lease_owner ~ %(stage_token_pattern)s
  AND NOT EXISTS (
      SELECT 1 FROM {jobs} AS j
      WHERE j.worker_id = o.id AND j.status IN (0, 1) AND j.lease_expires_at > bbo.now()
  )
RETURNING o.id;
