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
-- description: any unfinished status -> cancelled, for good.
UPDATE {operations}
SET status = 5, finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s
RETURNING *;
