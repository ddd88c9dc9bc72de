-- Named queries of manual steering (dramatiq_bbo.jobs.control). The caller holds the row lock and
-- has checked the current status.

-- name: control_pause
-- description: queued/active -> paused (waits for a resume; unlike a health hold, never expires).
UPDATE {operations}
SET status = 2, lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s
RETURNING *;

-- name: control_resume
-- description: paused -> active (or queued if it never started), schedulable at once.
UPDATE {operations}
SET status = CASE WHEN started_at IS NULL THEN 0 ELSE 1 END,
    lease_owner = NULL, lease_expires_at = NULL, last_run_at = NULL
WHERE id = %(id)s
RETURNING *;

-- name: control_cancel
-- description: any unfinished status -> cancelled, for good; finished instead when its last row was already processed and no job is left (nothing was left to cancel).
UPDATE {operations} AS o
SET status = CASE WHEN {ending_all_rows_done} THEN 3 ELSE 5 END,
    total_tuple_count = CASE WHEN {ending_all_rows_done} THEN o.processed_tuple_count
                             ELSE o.total_tuple_count END,
    finished_at = bbo.now(), lease_owner = NULL, lease_expires_at = NULL
WHERE o.id = %(id)s
RETURNING *;
