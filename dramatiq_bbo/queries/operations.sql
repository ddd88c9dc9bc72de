-- Named queries of the enqueue side: catalog checks on the target table, duplicate
-- detection, inserting an operation, reading operations and their jobs.
--
-- {operations} and {jobs} are filled by dramatiq_bbo.queries.query() with the bbo table of
-- the right scope (dramatiq_bbo.state.store.tables_for); every value is a parameter.

-- name: catalog_resolve_table
-- description: The relation a [schema.]table name resolves to: through search_path when unqualified, else by exact schema and name (read from the catalog, so a schema the role may not use still resolves, and is then refused with the privilege it lacks).
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS relkind
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE CASE WHEN %(schema)s::text IS NULL
           THEN c.oid = to_regclass(quote_ident(%(name)s::text))
           ELSE n.nspname = %(schema)s::text AND c.relname = %(name)s::text END;

-- name: catalog_table_columns
-- description: The live columns of a table with their SQL type (for casts) and nullability.
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type_name,
       a.attnotnull AS not_null,
       a.attnum::int AS attnum
FROM pg_catalog.pg_attribute AS a
WHERE a.attrelid = %(oid)s::oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: catalog_reflect_columns
-- description: What peewee's reflection asks of a table's columns (dramatiq_bbo.walk.tables), from the catalog by oid: name, type, nullability, primary key membership, default, full type, identity. information_schema answers the same, but planning its views costs milliseconds per table.
SELECT a.attname AS name,
       format_type(a.atttypid, NULL) AS data_type,
       NOT a.attnotnull AS nullable,
       coalesce(a.attnum = ANY (pk.indkey), false) AS primary_key,
       pg_get_expr(d.adbin, d.adrelid) AS column_default,
       format_type(a.atttypid, a.atttypmod) AS full_type,
       a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%', false)
           AS identity
FROM pg_catalog.pg_attribute AS a
LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_catalog.pg_index AS pk ON pk.indrelid = a.attrelid AND pk.indisprimary
WHERE a.attrelid = %(oid)s::oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: catalog_reflect_primary_key
-- description: A table's primary key columns in key order (peewee's reflection), from the catalog by oid.
SELECT a.attname AS name
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = %(oid)s::oid AND i.indisprimary
ORDER BY array_position(i.indkey::int2[], a.attnum);

-- name: catalog_table_indexes
-- description: Every index of a table with what the cursor checks need (method, keys, flags).
SELECT ic.relname AS name,
       am.amname AS method,
       i.indisunique AS is_unique,
       i.indisvalid AS is_valid,
       i.indpred IS NULL AS is_total,
       i.indexprs IS NULL AS is_plain,
       i.indnkeyatts::int AS key_count,
       i.indkey::int2[] AS keys,
       i.indoption::int2[] AS options
FROM pg_catalog.pg_index AS i
JOIN pg_catalog.pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am AS am ON am.oid = ic.relam
WHERE i.indrelid = %(oid)s::oid
ORDER BY ic.relname;

-- name: catalog_estimate_tuples
-- description: pg_class.reltuples of a table, or summed over the leaves of a partitioned one.
SELECT sum(c.reltuples) FILTER (WHERE c.reltuples >= 0)::float8 AS tuples,
       count(*) FILTER (WHERE c.reltuples >= 0)::int AS analysed
FROM pg_catalog.pg_class AS c
WHERE (c.oid = %(oid)s::oid AND c.relkind <> 'p')
   OR c.oid IN (SELECT t.relid FROM pg_partition_tree(%(oid)s::oid::regclass) AS t WHERE t.isleaf);

-- name: operation_lock_configuration
-- description: Serialise enqueues of one configuration until the transaction ends.
SELECT pg_advisory_xact_lock(%(key)s::bigint);

-- name: same_configuration
-- description: A piece of the WHERE clause, not a statement: the operations of one configuration (class, table, column, database, arguments), as enqueue's duplicate check and the cron's lookup find them.
job_class_name = %(job_class_name)s
  AND table_schema = %(table_schema)s
  AND table_name = %(table_name)s
  AND column_name = %(column_name)s
  AND database_name = %(database_name)s
  AND job_arguments = %(job_arguments)s::jsonb

-- name: operation_find_unfinished
-- description: An unfinished operation with the same configuration in the same scope ({scope_condition}: the organization's, or TRUE for cell-local), in any partition.
SELECT *
FROM {operations}
WHERE {scope_condition}
  AND {same_configuration}
  AND status IN (0, 1, 2)
ORDER BY created_at, id
LIMIT 1;

-- name: operation_insert
-- description: Create a queued operation; returns the whole row. {scope_columns}/{scope_values} add the organization_id and user_id of an organization-scoped one (dramatiq_bbo.state.store.Scope).
INSERT INTO {operations} (
    partition, job_class_name, table_schema, table_name, table_oid, column_name,
    cursor_columns, job_arguments, database_name, status, priority, batch_size,
    sub_batch_size, min_batch_size, max_batch_size, pause_ms, interval_seconds, min_cursor,
    max_cursor, total_tuple_count{scope_columns}
) VALUES (
    %(partition)s, %(job_class_name)s, %(table_schema)s, %(table_name)s, %(table_oid)s,
    %(column_name)s, %(cursor_columns)s,
    %(job_arguments)s::jsonb, %(database_name)s, 0, %(priority)s, %(batch_size)s,
    %(sub_batch_size)s, %(min_batch_size)s, %(max_batch_size)s, %(pause_ms)s,
    %(interval_seconds)s, %(min_cursor)s::jsonb, %(max_cursor)s::jsonb, %(total_tuple_count)s
    {scope_values}
)
RETURNING *;

-- name: operation_by_id
-- description: One operation by id, whatever its partition.
SELECT * FROM {operations} WHERE id = %(id)s;

-- name: operation_by_id_for_update
-- description: One operation by id, row-locked until the transaction ends.
SELECT * FROM {operations} WHERE id = %(id)s FOR UPDATE;

-- name: operation_jobs
-- description: The jobs of one operation, oldest first.
SELECT * FROM {jobs} WHERE worker_id = %(id)s ORDER BY created_at, id;

-- name: catalog_resolve_names
-- description: The oid each [schema.]table name resolves to (NULL when none), through search_path when unqualified.
SELECT CASE WHEN e.schema IS NULL
            THEN to_regclass(quote_ident(e.name))::oid::bigint
            ELSE (SELECT c.oid::bigint
                  FROM pg_catalog.pg_class AS c
                  JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                  WHERE n.nspname = e.schema AND c.relname = e.name) END AS oid
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS e(schema, name);

-- name: catalog_table_privileges
-- description: Whether the current role may use the table's schema and read the table.
SELECT current_user AS role,
       has_schema_privilege(c.relnamespace, 'USAGE') AS schema_usage,
       has_table_privilege(c.oid, 'SELECT') AS can_select
FROM pg_catalog.pg_class AS c
WHERE c.oid = %(oid)s::oid;

-- name: catalog_table_relations
-- description: The schema and name of a table and of every partition under it (what a plan scans).
SELECT n.nspname AS schema, c.relname AS name
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.oid = %(oid)s::oid
   OR c.oid IN (SELECT t.relid FROM pg_partition_tree(%(oid)s::oid::regclass) AS t);

-- name: scope_probe_without_seqscan
-- description: For the rest of the (savepoint's) transaction, plan as if no sequential scan were possible: an index that can serve the scope is then chosen whatever the table's size.
SELECT set_config('enable_seqscan', 'off', true);

-- name: catalog_table_oid
-- description: The oid of the relation with exactly this schema and name (no search_path, no parsing).
SELECT c.oid::bigint AS oid
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s;

-- name: operation_hold
-- description: Hold the operation until bbo.now() + seconds with a reason an operator reads in get_operation (a health stop, a class this worker cannot import, a table changed since enqueue); the scheduler skips it meanwhile.
UPDATE {operations}
SET on_hold_until = bbo.now() + make_interval(secs => %(seconds)s),
    hold_reason = left(%(reason)s, 1000)
WHERE partition = %(partition)s AND id = %(id)s
RETURNING on_hold_until;
