-- Named queries of the heartbeat (dramatiq_bbo.jobs.heartbeat): renewing the leases of the jobs
-- this process runs, and of the operation stages it holds, while they run.
--
-- {operations} and {jobs} are filled with the bbo tables of one scope. One transaction per
-- renewal, operation row first, then job row: the library's one lock order.

-- name: heartbeat_renew_stage
-- description: Renew the operation's stage lease while this holder still owns it; its id if it does.
UPDATE {operations}
SET lease_expires_at = bbo.now() + make_interval(secs => %(lease_seconds)s)
WHERE partition = %(partition)s AND id = %(id)s
  AND lease_owner = %(token)s AND status IN (0, 1)
RETURNING id;

-- name: heartbeat_renew_job
-- description: Renew a running job's lease while this runner still owns it; its id if it does.
UPDATE {jobs}
SET lease_expires_at = greatest(lease_expires_at, bbo.now() + make_interval(secs => %(lease_seconds)s)),
    heartbeat_at = bbo.now()
WHERE partition = %(partition)s AND id = %(id)s AND status = 1 AND lease_owner = %(owner)s
RETURNING id;

-- name: heartbeat_release_stage
-- description: Give the operation's stage lease back, if this holder still owns it.
UPDATE {operations}
SET lease_owner = NULL, lease_expires_at = NULL
WHERE partition = %(partition)s AND id = %(id)s AND lease_owner = %(token)s;

-- name: heartbeat_take_stage
-- description: Take the operation's stage lease for a runner in this process (run_to_completion), overriding a stage message that has not acted yet; nothing for an operation that is not queued or active.
UPDATE {operations}
SET lease_owner = %(token)s,
    lease_expires_at = bbo.now() + make_interval(secs => %(lease_seconds)s)
WHERE partition = %(partition)s AND id = %(id)s AND status IN (0, 1)
RETURNING id;
