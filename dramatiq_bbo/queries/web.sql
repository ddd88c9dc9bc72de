-- Named queries of the operators' web page (dramatiq_bbo.web): a page of the operations list
-- and its count. They read the views of schema/sql/0006_views.sql, like the reading API
-- (summaries.sql), adding what a paged list needs. A NULL filter matches everything.

-- name: web_operations_page
-- description: One page of operations of both scopes, newest first, narrowed by the filters given.
SELECT *
FROM bbo.operations
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(class_name)s::text IS NULL OR job_class_name = %(class_name)s::text)
  AND (%(organization_id)s::bigint IS NULL OR organization_id = %(organization_id)s::bigint)
  AND (%(scope)s::text IS NULL OR scope = %(scope)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: web_operations_count
-- description: How many operations the same filters match (counted on the raw rows: no per-operation job counts).
SELECT count(*)
FROM bbo.operation_rows
WHERE (%(status_code)s::smallint IS NULL OR status = %(status_code)s::smallint)
  AND (%(class_name)s::text IS NULL OR job_class_name = %(class_name)s::text)
  AND (%(organization_id)s::bigint IS NULL OR organization_id = %(organization_id)s::bigint)
  AND (%(scope)s::text IS NULL OR scope = %(scope)s::text);

-- name: web_unfinished_count
-- description: How many operations are queued or active: the list refreshes itself while there are some.
SELECT count(*) FROM bbo.operation_rows WHERE status IN (0, 1);

-- name: web_health_holds
-- description: The last health hold written on an operation for each indicator named (hold_reason "<indicator>: <reason>"), newest first.
SELECT DISTINCT ON (indicator)
       indicator, o.hold_reason, o.on_hold_until, o.id, o.scope, o.job_class_name,
       coalesce(o.on_hold_until > bbo.now(), false) AS in_force
FROM bbo.operation_rows AS o
CROSS JOIN LATERAL (SELECT split_part(o.hold_reason, ':', 1) AS indicator) AS i
WHERE o.hold_reason IS NOT NULL AND indicator = ANY(%(indicators)s::text[])
ORDER BY indicator, o.on_hold_until DESC NULLS LAST;
