-- Named queries of the operators' web page (dramatiq_bbo.web): a page of the operations list,
-- its count, and the health page's holds. A page is chosen on the operation tables' own
-- columns (filter, sort, offset), then its rows are read from bbo.operations (the view of
-- schema/sql/0006_views.sql that the reading API reads too), so that the view's per-operation
-- job counts, rate and ETA are computed for the rows shown only, whatever the offset. A NULL
-- filter matches everything.

-- name: web_operation_keys
-- description: Both scopes' operation rows reduced to what the list filters and sorts on, read from the tables (the views would compute every operation's counts first).
SELECT o.scope, o.id, o.created_at
FROM (
    SELECT 'cell_local'::text AS scope, w.id::text AS id, w.created_at, NULL::bigint AS organization_id,
           w.job_class_name, w.status
    FROM bbo.background_operation_workers_cell_local AS w
    UNION ALL
    SELECT 'organization'::text, w.id::text, w.created_at, w.organization_id, w.job_class_name, w.status
    FROM bbo.background_operation_workers AS w
) AS o
WHERE (%(status_code)s::smallint IS NULL OR o.status = %(status_code)s::smallint)
  AND (%(class_name)s::text IS NULL OR o.job_class_name = %(class_name)s::text)
  AND (%(organization_id)s::bigint IS NULL OR o.organization_id = %(organization_id)s::bigint)
  AND (%(scope)s::text IS NULL OR o.scope = %(scope)s::text)

-- name: web_operations_page
-- description: The keys of one page of operations, newest first (the same order as the reading API's list).
SELECT k.scope, k.id
FROM ({web_operation_keys}) AS k
ORDER BY k.created_at DESC, k.id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: web_operations_count
-- description: How many operations the list's filters match.
SELECT count(*) FROM ({web_operation_keys}) AS k;

-- name: web_operations_by_id
-- description: The operations of one page as bbo.operations shows them, by id (as text): the view computes counts, rate and ETA for these rows only.
SELECT * FROM bbo.operations WHERE id = ANY(%(ids)s::text[]);

-- name: web_health_holds
-- description: The last health hold written on an operation for each indicator named (hold_reason "<indicator>: <reason>"), newest first.
SELECT DISTINCT ON (indicator)
       indicator, o.hold_reason, o.on_hold_until, o.id, o.scope, o.job_class_name,
       coalesce(o.on_hold_until > bbo.now(), false) AS in_force
FROM bbo.operation_rows AS o
CROSS JOIN LATERAL (SELECT split_part(o.hold_reason, ':', 1) AS indicator) AS i
WHERE o.hold_reason IS NOT NULL AND indicator = ANY(%(indicators)s::text[])
ORDER BY indicator, o.on_hold_until DESC NULLS LAST;

-- name: web_without_jit
-- description: No JIT compilation in this transaction: the page's read of the view is estimated dear (a lateral per row over a union) but reads 50 rows; compiling it would cost Postgres more than running it.
SELECT set_config('jit', 'off', true);
