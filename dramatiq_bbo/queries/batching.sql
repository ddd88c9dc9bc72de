-- Named queries of the sub-batch transaction: its guards, the job-row lock that makes one
-- runner the only writer of a job, and the checkpoint that commits with the sub-batch.
--
-- {operations} and {jobs} are filled by dramatiq_bbo.queries.query() with the bbo tables of
-- the operation's scope (dramatiq_bbo.state.store.tables_for); every value is a parameter. Queries
-- over the target table are built with peewee in dramatiq_bbo.walk.checkpoint.

-- name: batching_sub_batch_guards
-- description: SET LOCAL statement_timeout, lock_timeout and idle_in_transaction_session_timeout for the current transaction only (a sub-batch, a job creation).
SELECT set_config('statement_timeout', %(statement_timeout)s, true),
       set_config('lock_timeout', %(lock_timeout)s, true),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, true);

-- name: batching_begin_sub_batch
-- description: Read who holds the job (its lease owner) and probe the sub-batch's first and last rows, in one statement; {first} and {last} are the keyset probes (dramatiq_bbo.walk.keyset.Keyset.sub_batch_probes); parameters are positional, in textual order.
-- The job row is not locked: the heartbeat renews its lease while the sub-batch runs, and the
-- checkpoint re-checks the lease before the sub-batch commits (batching_checkpoint_job).
SELECT j.status,
       j.lease_owner,
       bbo_first.*,
       bbo_last.*
FROM {jobs} AS j
LEFT JOIN LATERAL ({first}) AS bbo_first ON true
LEFT JOIN LATERAL ({last}) AS bbo_last ON true
WHERE j.partition = %s AND j.id = %s;

-- name: batching_checkpoint_operation
-- description: With the sub-batch, first (lock order: operation row, then job row): the operation's counters.
UPDATE {operations}
SET processed_tuple_count = processed_tuple_count + %(processed)s,
    affected_tuple_count = affected_tuple_count + %(affected)s,
    updated_at = now()
WHERE partition = %(partition)s AND id = %(id)s;

-- name: batching_checkpoint_job
-- description: With the sub-batch, then: the job's checkpoint, counters and lease, only while this runner holds the lease; otherwise an error (SQLSTATE LEASE) aborts the transaction, so the COMMIT queued behind it never runs.
WITH job AS (
    UPDATE {jobs}
    SET checkpoint_cursor = %(checkpoint)s::jsonb,
        processed_tuple_count = processed_tuple_count + %(processed)s,
        affected_tuple_count = affected_tuple_count + %(affected)s,
        heartbeat_at = now(),
        lease_expires_at = greatest(lease_expires_at, now() + make_interval(secs => %(lease_seconds)s)),
        updated_at = now()
    WHERE partition = %(job_partition)s AND id = %(job_id)s
      AND status = 1 AND lease_owner = %(lease_owner)s
    RETURNING id
)
SELECT bbo.assert_lease_held(EXISTS (SELECT 1 FROM job), %(job_id)s::text);
