-- Named queries of the reading API (dramatiq_bbo.operate.summaries): they read the views of
-- schema/sql/0006_views.sql, the same rows an operator reads with psql. A NULL filter
-- matches everything; every value is a parameter.

-- name: summaries_list_operations
-- description: Operations of both scopes, newest first, narrowed by the filters given.
SELECT *
FROM bbo.operations
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(class_name)s::text IS NULL OR job_class_name = %(class_name)s::text)
  AND (%(organization_id)s::bigint IS NULL OR organization_id = %(organization_id)s::bigint)
  AND (%(scope)s::text IS NULL OR scope = %(scope)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: summaries_operation
-- description: One operation by scope and id (as text).
SELECT * FROM bbo.operations WHERE scope = %(scope)s AND id = %(id)s;

-- name: summaries_recent_jobs
-- description: The most recent jobs of one operation, newest first.
SELECT *
FROM bbo.jobs
WHERE scope = %(scope)s AND operation_id = %(id)s
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: summaries_failed_jobs
-- description: Failed jobs, most recent failure first, within the last `since` (NULL: any time), of one operation or of all.
SELECT *
FROM bbo.failed_jobs
WHERE (%(since)s::interval IS NULL OR failed_at >= bbo.now() - %(since)s::interval)
  AND (%(scope)s::text IS NULL OR (scope = %(scope)s::text AND operation_id = %(id)s::text))
ORDER BY failed_at DESC NULLS LAST, job_id DESC
LIMIT %(limit)s;
