-- Named queries of the hold on an operation whose class this worker cannot import
-- (dramatiq_bbo.pipeline.unknown_class).
--
-- {operations} and {jobs} are filled with the bbo tables of one scope.

-- name: unknown_class_release
-- description: Clear an expired unknown-class hold once a worker that knows the class looks at the operation.
UPDATE {operations}
SET on_hold_until = NULL, hold_reason = NULL
WHERE partition = %(partition)s AND id = %(id)s
  AND hold_reason = %(reason)s AND on_hold_until <= bbo.now()
RETURNING id;

-- name: unknown_class_undispatch_job
-- description: Give back a job dispatched to a runner that cannot import its class: pending, no lease, attempts untouched.
UPDATE {jobs}
SET lease_owner = NULL, lease_expires_at = NULL
WHERE worker_id = %(worker_id)s AND id = %(id)s AND status = 0
RETURNING id;
