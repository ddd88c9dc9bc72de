-- Named queries of job splitting (dramatiq_bbo.splitting): a job that timed out on its last
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

-- name: splitting_insert_split_job_cell_local
-- description: One half of a split job, pending, with the parent's sizes.
INSERT INTO {jobs} (partition, worker_id, worker_partition, status, batch_size, sub_batch_size,
                    pause_ms, min_cursor, max_cursor, metrics)
VALUES (%(partition)s, %(worker_id)s, %(worker_partition)s, 0, %(batch_size)s,
        %(sub_batch_size)s, %(pause_ms)s, %(min_cursor)s::jsonb, %(max_cursor)s::jsonb,
        jsonb_build_object('split_from', %(parent)s::text))
RETURNING *;

-- name: splitting_insert_split_job_organization
-- description: One half of a split job of an organization operation.
INSERT INTO {jobs} (partition, organization_id, worker_id, worker_partition, status, batch_size,
                    sub_batch_size, pause_ms, min_cursor, max_cursor, metrics)
VALUES (%(partition)s, %(organization_id)s, %(worker_id)s, %(worker_partition)s, 0,
        %(batch_size)s, %(sub_batch_size)s, %(pause_ms)s, %(min_cursor)s::jsonb,
        %(max_cursor)s::jsonb, jsonb_build_object('split_from', %(parent)s::text))
RETURNING *;

-- name: splitting_mark_split
-- description: A job that timed out on its last attempt was split in two; it no longer counts as failed for good.
UPDATE {jobs}
SET metrics = metrics || jsonb_build_object('split_into', %(children)s::jsonb)
WHERE partition = %(partition)s AND id = %(id)s;
