-- Named queries of the sub-batch transaction: its guards, the job-row lock that makes one
-- runner the only writer of a job, and the checkpoint that commits with the sub-batch.
--
-- {operations} and {jobs} are filled by dramatiq_bbo.queries.query() with the bbo tables of
-- the operation's scope (dramatiq_bbo.store.tables_for); every value is a parameter. Queries
-- over the target table are built with peewee in dramatiq_bbo.batching.

-- name: batching_sub_batch_guards
-- description: SET LOCAL statement_timeout and lock_timeout for the current sub-batch only.
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true);

-- name: batching_lock_job
-- description: Lock the job row for the sub-batch; its lease owner says who may write it.
SELECT status, lease_owner, checkpoint_cursor
FROM {jobs}
WHERE partition = %(partition)s AND id = %(id)s
FOR UPDATE;

-- name: batching_job_checkpoint
-- description: Advance the job's checkpoint and counters, and renew its lease, with the sub-batch.
UPDATE {jobs}
SET checkpoint_cursor = %(checkpoint)s::jsonb,
    processed_tuple_count = processed_tuple_count + %(processed)s,
    affected_tuple_count = affected_tuple_count + %(affected)s,
    heartbeat_at = now(),
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    updated_at = now()
WHERE partition = %(partition)s AND id = %(id)s;

-- name: batching_operation_progress
-- description: Add one sub-batch's rows to the operation's counters, with the sub-batch.
UPDATE {operations}
SET processed_tuple_count = processed_tuple_count + %(processed)s,
    affected_tuple_count = affected_tuple_count + %(affected)s,
    updated_at = now()
WHERE partition = %(partition)s AND id = %(id)s;
