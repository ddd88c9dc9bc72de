-- Named queries of job splitting (dramatiq_bbo.jobs.planning): a job that timed out on its last
-- attempt is replaced by two pending halves of what it left.
--
-- {jobs} is filled with the jobs table of the operation's scope.

-- name: splitting_splittable_job
-- description: A job that failed on a timeout with no attempt left and was not split yet.
SELECT * FROM {jobs}
WHERE worker_id = %(worker_id)s AND status = 2 AND attempts >= %(max_attempts)s
  AND exception_class = 'dramatiq_bbo.errors.SubBatchTimeout'
  AND NOT metrics ? 'split_into'
ORDER BY created_at
LIMIT 1;

-- name: splitting_mark_split
-- description: A job that timed out on its last attempt was split in two; it no longer counts as failed for good.
UPDATE {jobs}
SET metrics = metrics || jsonb_build_object('split_into', %(children)s::jsonb)
WHERE partition = %(partition)s AND id = %(id)s;
