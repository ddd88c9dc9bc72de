-- Named queries of the pipeline (dramatiq_bbo.pipeline): the scheduler's scan and recovery,
-- the orchestrator's claim, and the leases that keep two messages for one operation from
-- both acting.
--
-- {operations} and {jobs} are filled with the bbo tables of one scope. Lock order: a
-- transaction that locks both locks the operation row first (docs/pipeline.md, "Lock order").

-- name: pipeline_recover_stale_jobs
-- description: Jobs left running past their lease (a runner that died or froze) go back to pending, skipping rows locked right now; their checkpoint is kept. An interruption, not an attempt: the run's attempt is refunded, up to max_interruptions, past which it counts as a failed attempt.
WITH stale AS (
    SELECT partition, id
    FROM {jobs}
    WHERE status = 1 AND lease_expires_at < bbo.now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {jobs} AS j
SET status = CASE WHEN j.interruptions >= %(max_interruptions)s THEN 2 ELSE 0 END,
    attempts = CASE WHEN j.interruptions >= %(max_interruptions)s THEN j.attempts
                    ELSE greatest(j.attempts - 1, 0) END,
    interruptions = j.interruptions + 1,
    exception_class = CASE WHEN j.interruptions >= %(max_interruptions)s
                           THEN 'dramatiq_bbo.errors.TooManyInterruptions'
                           ELSE j.exception_class END,
    exception_message = CASE WHEN j.interruptions >= %(max_interruptions)s
                             THEN format('job %%s was interrupted %%s times (max_interruptions is %%s): '
                                         'this interruption counts as a failed attempt',
                                         j.id, j.interruptions + 1, %(max_interruptions)s)
                             ELSE j.exception_message END,
    finished_at = CASE WHEN j.interruptions >= %(max_interruptions)s THEN bbo.now() END,
    metrics = j.metrics || jsonb_build_object('interrupted_reason', 'lease_expired'),
    lease_owner = NULL,
    lease_expires_at = NULL
FROM stale
WHERE j.partition = stale.partition AND j.id = stale.id
RETURNING j.id, j.worker_id, j.attempts, j.interruptions, j.status;

-- name: pipeline_jobs_in_flight
-- description: Jobs running or dispatched to a runner under a live lease.
SELECT count(*)::bigint
FROM {jobs}
WHERE status IN (0, 1) AND lease_expires_at > bbo.now();

-- name: pipeline_schedulable_operations
-- description: Up to limit operations of one scope ready for their next job (queued or active, next_run_at — hold, stage lease and interval elapsed — within the given window of due times, no live job, class not disabled, not excluded), highest priority first, then due longest, their rows locked (SKIP LOCKED).
-- Index-served, nothing sorts the scope (see dramatiq_bbo.pipeline.picking): "priorities" is a
-- loose index scan of the distinct priorities of the scope's unfinished operations (one probe
-- of the *_schedule index each, highest first); for each, the operations due in the window are
-- read in next_run_at order from the same index, stopping after {candidates} (a literal)
-- rows that pass the exclusion, live-job and disabled-class checks. Those are hashed subplans
-- (NOT IN: none of the columns is nullable), each read once per statement (the operations
-- with a live job are at most the jobs in flight), not per-row probes nor joins: a join would
-- lose the index order, and per-row probes make the estimated cost large enough for Postgres
-- to JIT-compile the statement (tens of ms) where JIT is on. The outer query locks the first
-- "limit" candidates, skipping rows locked now, and re-checks each row as it is once locked.
WITH RECURSIVE priorities (priority) AS (
    (SELECT o.priority FROM {operations} o
     WHERE o.database_name = %(database_name)s AND o.status IN (0, 1)
     ORDER BY o.priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT o.priority FROM {operations} o
            WHERE o.database_name = %(database_name)s AND o.status IN (0, 1)
              AND o.priority < p.priority
            ORDER BY o.priority DESC LIMIT 1)
    FROM priorities p
    WHERE p.priority IS NOT NULL
),
candidates AS MATERIALIZED (
    SELECT c.partition, c.id, c.priority, c.next_run_at
    FROM priorities p
    CROSS JOIN LATERAL (
        SELECT o.partition, o.id, o.priority, o.next_run_at
        FROM {operations} o
        WHERE o.database_name = %(database_name)s AND o.status IN (0, 1)
          AND o.priority = p.priority
          AND o.next_run_at <= bbo.now() - make_interval(secs => %(due_for_at_least)s)
          AND o.next_run_at > coalesce(bbo.now() - make_interval(secs => %(due_for_less_than)s),
                                       '-infinity')
          AND o.id::text NOT IN (SELECT unnest(%(exclude)s::text[]))
          AND o.id NOT IN (
              SELECT j.worker_id FROM {jobs} j
              WHERE j.status IN (0, 1) AND j.lease_expires_at > bbo.now()
          )
          AND o.job_class_name NOT IN (SELECT d.job_class_name FROM bbo.disabled_classes d)
        ORDER BY o.next_run_at
        LIMIT {candidates}
    ) c
    WHERE p.priority IS NOT NULL
    ORDER BY c.priority DESC, c.next_run_at
    LIMIT {candidates}
)
SELECT o.id, o.partition
FROM candidates c
JOIN {operations} o ON o.partition = c.partition AND o.id = c.id
WHERE o.status IN (0, 1)
  AND o.next_run_at <= bbo.now() - make_interval(secs => %(due_for_at_least)s)
ORDER BY c.priority DESC, c.next_run_at
LIMIT %(limit)s
FOR UPDATE OF o SKIP LOCKED;

-- name: pipeline_lease_operation
-- description: Mark a stage message in flight for the operation until the lease expires.
UPDATE {operations}
SET lease_owner = %(token)s,
    lease_expires_at = bbo.now() + make_interval(secs => %(seconds)s)
WHERE partition = %(partition)s AND id = %(id)s;

-- name: pipeline_release_operation
-- description: Clear the operation's stage lease (held by this token, or any when token is NULL).
UPDATE {operations}
SET lease_owner = NULL, lease_expires_at = NULL
WHERE partition = %(partition)s AND id = %(id)s
  AND (%(token)s::text IS NULL OR lease_owner = %(token)s::text);

-- name: pipeline_operation_for_update
-- description: Lock one operation row for the orchestrator, waiting for short-lived holders (nothing if it does not exist); with whether its lease is live, it is on hold, its class is disabled.
-- It waits rather than SKIP LOCKED: the holder of the row lock is not necessarily a stage that
-- will carry the operation on. A scheduler tick whose scan met the row just as a wake-up or a
-- runner committed a new stage lease keeps the row locked until the tick commits (Postgres
-- keeps the lock of a row that fails the re-check after a concurrent update), and so do a
-- sub-batch checkpoint, a claim or a pause for their short transactions. Skipping would drop
-- the one message that holds the operation's lease, stranding the operation until the lease
-- expires. Every holder is a short transaction, and the orchestrator holds nothing before this
-- statement, so the wait cannot deadlock; after it, the lease check tells a redundant message
-- (another token owns the lease) from the one that must act.
SELECT o.*, (o.lease_expires_at IS NOT NULL AND o.lease_expires_at > bbo.now()) AS lease_live,
       (o.on_hold_until IS NOT NULL AND o.on_hold_until > bbo.now()) AS on_hold,
       EXISTS (SELECT 1 FROM bbo.disabled_classes d
               WHERE d.job_class_name = o.job_class_name) AS class_disabled
FROM {operations} o
WHERE o.id = %(id)s
FOR UPDATE OF o;

-- name: pipeline_live_job
-- description: A job of the operation running or dispatched under a live lease.
SELECT id FROM {jobs}
WHERE worker_id = %(worker_id)s AND status IN (0, 1) AND lease_expires_at > bbo.now()
LIMIT 1;

-- name: pipeline_dispatch_job
-- description: Hand a job to a runner message (pending; the lease keeps other orchestrators off it); a running job whose lease expired was interrupted: counted like the scheduler's recovery counts it.
UPDATE {jobs}
SET status = 0,
    attempts = CASE WHEN status = 1 AND interruptions < %(max_interruptions)s
                    THEN greatest(attempts - 1, 0) ELSE attempts END,
    interruptions = interruptions + CASE WHEN status = 1 THEN 1 ELSE 0 END,
    lease_owner = %(token)s,
    lease_expires_at = bbo.now() + make_interval(secs => %(seconds)s)
WHERE partition = %(partition)s AND id = %(id)s;

-- name: pipeline_recent_successful_jobs
-- description: The operation's latest successful jobs, for the batch optimizer.
SELECT * FROM {jobs}
WHERE worker_id = %(worker_id)s AND status = 3
ORDER BY finished_at DESC
LIMIT %(limit)s;

-- name: pipeline_set_batch_size
-- description: The optimizer's new batch size for the operation's next jobs.
UPDATE {operations}
SET batch_size = %(batch_size)s
WHERE partition = %(partition)s AND id = %(id)s AND sub_batch_size <= %(batch_size)s;

-- name: pipeline_take_free_lease
-- description: Take the operation's stage lease only if no live stage holds it.
UPDATE {operations}
SET lease_owner = %(token)s,
    lease_expires_at = bbo.now() + make_interval(secs => %(seconds)s)
WHERE partition = %(partition)s AND id = %(id)s
  AND status IN (0, 1)
  AND (lease_expires_at IS NULL OR lease_expires_at <= bbo.now())
RETURNING id;

-- name: pipeline_pass_stage_lease
-- description: Pass the operation's stage lease from the stage that holds it (held) to the next message (token), or take it if no live stage holds it; nothing when another stage holds it (run_to_completion took the operation over).
UPDATE {operations}
SET lease_owner = %(token)s,
    lease_expires_at = bbo.now() + make_interval(secs => %(seconds)s)
WHERE partition = %(partition)s AND id = %(id)s
  AND (lease_owner IS NOT DISTINCT FROM %(held)s::text
       OR lease_expires_at IS NULL OR lease_expires_at <= bbo.now())
RETURNING id;

-- name: pipeline_release_operation_by_id
-- description: Clear the stage lease held by this token, whatever the partition (after a failed stage).
UPDATE {operations}
SET lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND lease_owner = %(token)s;

-- name: pipeline_hold_seconds_left
-- description: Seconds until the operation's health hold ends (NULL when it is not on hold).
SELECT extract(epoch FROM on_hold_until - bbo.now())::float8
FROM {operations}
WHERE partition = %(partition)s AND id = %(id)s AND on_hold_until > bbo.now();

-- name: pipeline_reannounce_queued
-- description: NOTIFY the consumers of every message left queued on these queues, as dramatiq-pg's enqueue does: after a worker's shutdown requeued the messages it had taken (dramatiq-pg requeues without a NOTIFY, so nobody would look at them until a consumer restarts).
SELECT count(pg_notify(
    'dramatiq.' || queue_name || '.enqueue',
    CASE WHEN octet_length(message::text) >= 8000
         THEN jsonb_build_object('message_id', message_id::text)::text
         ELSE message::text
    END))
FROM {queue}
WHERE "state" = 'queued' AND queue_name = ANY(%(queues)s::text[]);


-- name: pipeline_release_expired_hold
-- description: Clear an expired hold when no middleware objects to the next job any more: its reason no longer holds (get_operation stops showing it).
UPDATE {operations}
SET on_hold_until = NULL, hold_reason = NULL
WHERE partition = %(partition)s AND id = %(id)s
  AND on_hold_until IS NOT NULL AND on_hold_until <= bbo.now();

-- name: pipeline_generic_plans
-- description: Prepared statements of the rest of this transaction run their generic plan, planned once per connection (SET LOCAL plan_cache_mode).
SELECT set_config('plan_cache_mode', 'force_generic_plan', true);

-- name: pipeline_plans_as_before
-- description: Back to the session's own plan_cache_mode for the rest of this transaction.
SELECT set_config('plan_cache_mode',
                  (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'plan_cache_mode'),
                  true);
