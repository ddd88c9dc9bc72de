-- Named queries of the sub-batch transaction: its guards, the lease check that makes one
-- runner the only writer of a job, the checkpoint that commits with the sub-batch, and the
-- roll-up of a job's counters onto its operation.
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
-- description: Read who holds the job (its lease owner) and its checkpoint, and probe the sub-batch's first and last rows, in one statement; {first} and {last} are the keyset probes (dramatiq_bbo.walk.keyset.Keyset.sub_batch_probes); parameters are positional, in textual order.
-- The job row is not locked: the heartbeat renews its lease while the sub-batch runs, and the
-- checkpoint re-checks the lease before the sub-batch commits (batching_checkpoint_job).
-- Its first column puts the application's plan_cache_mode back for the rest of the sub-batch
-- (the author's statements), for this transaction only: it is evaluated after this statement
-- was planned, generically (batching_session_guards); the COMMIT ends it.
SELECT set_config('plan_cache_mode',
                  coalesce(current_setting('bbo.app_plan_cache_mode', true),
                           current_setting('plan_cache_mode')), true) AS bbo_plan_cache_mode,
       j.status,
       j.lease_owner,
       j.checkpoint_cursor,
       bbo_first.*,
       bbo_last.*
FROM {jobs} AS j
LEFT JOIN LATERAL ({first}) AS bbo_first ON true
LEFT JOIN LATERAL ({last}) AS bbo_last ON true
WHERE j.partition = %s AND j.id = %s;

-- name: batching_app_plans
-- description: Before the probes of a scoped walk: the application's plan_cache_mode for this transaction (the scope's conditions may want a plan made for their values).
SELECT set_config('plan_cache_mode', current_setting('bbo.app_plan_cache_mode'), true);

-- name: batching_session_guards
-- description: The walk's guards for the whole session, set once per job before its first sub-batch (outside any transaction, so a rolled-back sub-batch keeps them), and the sub-batches' synchronous_commit (the setting sub_batch_synchronous_commit: a sub-batch commits with its checkpoint, so a lost commit loses both), with the values they replace so the walk's end restores them (batching_restore_guards). Between sub-batches the connection runs only the walk's own statements, so this is equivalent to SET LOCAL in every sub-batch, one statement fewer each time. Also generic plans for the walk's probes: Postgres would otherwise plan them afresh at every sub-batch (it keeps choosing a custom plan for a range between two parameters), which costs more than running them; each sub-batch's begin statement puts the application's mode (kept in bbo.app_plan_cache_mode) back for the author's statements, until its COMMIT.
SELECT current_setting('statement_timeout') AS statement_timeout,
       current_setting('lock_timeout') AS lock_timeout,
       current_setting('idle_in_transaction_session_timeout') AS idle_timeout,
       current_setting('plan_cache_mode') AS plan_cache_mode,
       current_setting('synchronous_commit') AS synchronous_commit,
       set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('synchronous_commit', %(synchronous_commit)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, false),
       set_config('bbo.app_plan_cache_mode', current_setting('plan_cache_mode'), false),
       set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('bbo.clock_offset', %(clock_offset)s, false);

-- name: batching_restore_guards
-- description: At the walk's end: the session's timeouts as they were before batching_session_guards (bbo.clock_offset stays: only bbo.now() reads it, and the next walk sets it again).
SELECT set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, false),
       set_config('plan_cache_mode', %(plan_cache_mode)s, false),
       set_config('synchronous_commit', %(synchronous_commit)s, false);

-- name: batching_checkpoint_job
-- description: With the sub-batch: the job's checkpoint, counters and lease, only while this runner holds the lease; otherwise an error (SQLSTATE LEASE, raised only then: the function is not called on the common path) aborts the transaction, so the COMMIT queued behind it never runs. The job row is the only bbo row a sub-batch writes; its counters reach the operation row at most once a second (batching_roll_up_counters). updated_at is set here, so the table's touch trigger (WHEN updated_at is unchanged) does not fire. The lease is extended only once less than half of it is left (the heartbeat renews it anyway): lease_expires_at is indexed, and an indexed column left alone keeps the update HOT — no new index entries for every sub-batch, which would slow every later lookup of the job row until a vacuum.
WITH job AS (
    UPDATE {jobs}
    SET checkpoint_cursor = %(checkpoint)s::jsonb,
        processed_tuple_count = processed_tuple_count + %(processed)s,
        affected_tuple_count = affected_tuple_count + %(affected)s,
        unrolled_processed = CASE WHEN %(roll_up)s THEN 0
                                  ELSE unrolled_processed + %(processed)s END,
        unrolled_affected = CASE WHEN %(roll_up)s THEN 0
                                 ELSE unrolled_affected + %(affected)s END,
        heartbeat_at = bbo.now(),
        lease_expires_at = CASE
            WHEN lease_expires_at < bbo.now() + make_interval(secs => %(lease_seconds)s / 2)
            THEN bbo.now() + make_interval(secs => %(lease_seconds)s)
            ELSE lease_expires_at END,
        updated_at = bbo.now()
    WHERE partition = %(job_partition)s AND id = %(job_id)s
      AND status = 1 AND lease_owner = %(lease_owner)s
    RETURNING id
)
SELECT CASE WHEN EXISTS (SELECT 1 FROM job) THEN true
            ELSE bbo.assert_lease_held(false, %(job_id)s::text) END;

-- name: batching_roll_up_counters
-- description: First (lock order: operation row, then job row): add to the operation's counters what its job counted and the operation does not have yet, plus this sub-batch's (processed, affected; 0 when the walk ends on no row left); the job's statement then records them as rolled up (batching_checkpoint_job with roll_up, or batching_mark_rolled_up). Run by a walk at most once a second and at its end; the end of a job has its own (batching_roll_up_job_end).
UPDATE {operations} AS o
SET processed_tuple_count = o.processed_tuple_count + d.processed,
    affected_tuple_count = o.affected_tuple_count + d.affected,
    updated_at = bbo.now()
FROM (
    SELECT j.unrolled_processed + %(processed)s AS processed,
           j.unrolled_affected + %(affected)s AS affected
    FROM {jobs} AS j
    WHERE j.partition = %(job_partition)s AND j.id = %(job_id)s
) AS d
WHERE o.partition = %(partition)s AND o.id = %(id)s
  AND (d.processed <> 0 OR d.affected <> 0);

-- name: batching_mark_rolled_up
-- description: After batching_roll_up_counters when a walk ends on no row left (no checkpoint to carry it): the job's counters are all on the operation now.
UPDATE {jobs}
SET unrolled_processed = 0, unrolled_affected = 0, updated_at = bbo.now()
WHERE partition = %(job_partition)s AND id = %(job_id)s
  AND (unrolled_processed <> 0 OR unrolled_affected <> 0);

-- name: batching_roll_up_job_end
-- description: In the transaction that records a job's end, which holds its operation's row lock (taken first, the one lock order): the counts its job row holds that the operation lacks (its walk stopped between two roll-ups: perform() raised, or a runner was killed earlier) move onto the operation. Idempotent: a retried end finds nothing left to move.
WITH old AS (
    SELECT partition, id, unrolled_processed, unrolled_affected
    FROM {jobs}
    WHERE partition = %(job_partition)s AND id = %(job_id)s
      AND (unrolled_processed <> 0 OR unrolled_affected <> 0)
    FOR UPDATE
), taken AS (
    UPDATE {jobs} AS j
    SET unrolled_processed = 0, unrolled_affected = 0, updated_at = bbo.now()
    FROM old
    WHERE j.partition = old.partition AND j.id = old.id
    RETURNING old.unrolled_processed AS processed, old.unrolled_affected AS affected
)
UPDATE {operations} AS o
SET processed_tuple_count = o.processed_tuple_count + taken.processed,
    affected_tuple_count = o.affected_tuple_count + taken.affected,
    updated_at = bbo.now()
FROM taken
WHERE o.partition = %(partition)s AND o.id = %(id)s;
