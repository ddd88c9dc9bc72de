-- dramatiq-bbo 0004: an operation's table kept as the catalog's (schema, name) pair and oid.
--
-- Idempotent, like every file here. Before this file, table_name held "schema.table" as
-- text that was parsed again to run the operation: a table whose name holds a dot or a
-- double quote could then resolve to another table. Now:
--   table_schema  the schema, exactly as pg_namespace.nspname spells it;
--   table_name    the bare table name, exactly as pg_class.relname spells it;
--   table_oid     the table's oid when enqueue validated it: before each job the stored pair
--                 is looked up again and must still be that oid, or the operation refuses
--                 to run (the table was dropped and re-created, or another took its name).
-- Rows written before this file are split here: the longest schema of the catalog that
-- prefixes the old text (followed by a dot) wins, else the text before its first dot.

ALTER TABLE bbo.background_operation_workers_cell_local
    ADD COLUMN IF NOT EXISTS table_schema text,
    ADD COLUMN IF NOT EXISTS table_oid bigint;
ALTER TABLE bbo.background_operation_workers
    ADD COLUMN IF NOT EXISTS table_schema text,
    ADD COLUMN IF NOT EXISTS table_oid bigint;

-- The duplicate guards must include the schema before the backfill, which may give two
-- unfinished rows the same bare name in two schemas. Rebuilt only when it lacks the column.
DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN
        SELECT * FROM (VALUES
            ('bowcl_unfinished_configuration', 'background_operation_workers_cell_local',
             'partition, job_class_name, table_schema, table_name, column_name, arguments_digest, database_name'),
            ('bow_unfinished_configuration', 'background_operation_workers',
             'partition, organization_id, job_class_name, table_schema, table_name, column_name, arguments_digest, database_name')
        ) AS s(index_name, table_name, columns)
    LOOP
        IF NOT EXISTS (
            SELECT 1
            FROM pg_catalog.pg_index AS i
            JOIN pg_catalog.pg_attribute AS a
              ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indexrelid = to_regclass('bbo.' || spec.index_name)
              AND a.attname = 'table_schema'
        ) THEN
            EXECUTE format('DROP INDEX IF EXISTS bbo.%I', spec.index_name);
            EXECUTE format(
                'CREATE UNIQUE INDEX %I ON bbo.%I (%s) WHERE status IN (0, 1, 2)',
                spec.index_name, spec.table_name, spec.columns
            );
        END IF;
    END LOOP;
END
$$;

-- Backfill the rows of the "schema.table" era.
DO $$
DECLARE
    target text;
BEGIN
    FOREACH target IN ARRAY ARRAY['background_operation_workers_cell_local',
                                  'background_operation_workers']
    LOOP
        EXECUTE format($sql$
            WITH parsed AS (
                SELECT w.partition, w.id, w.table_name AS old_name,
                       coalesce(
                           (SELECT n.nspname
                            FROM pg_catalog.pg_namespace AS n
                            WHERE left(w.table_name, length(n.nspname) + 1) = n.nspname || '.'
                            ORDER BY length(n.nspname) DESC
                            LIMIT 1),
                           CASE WHEN strpos(w.table_name, '.') > 0
                                THEN split_part(w.table_name, '.', 1)
                                ELSE current_schema() END
                       ) AS schema
                FROM bbo.%1$I AS w
                WHERE w.table_schema IS NULL
            )
            UPDATE bbo.%1$I AS w
            SET table_schema = p.schema,
                table_name = CASE
                    WHEN left(p.old_name, length(p.schema) + 1) = p.schema || '.'
                    THEN substr(p.old_name, length(p.schema) + 2)
                    ELSE p.old_name END
            FROM parsed AS p
            WHERE w.partition = p.partition AND w.id = p.id
        $sql$, target);
        EXECUTE format($sql$
            UPDATE bbo.%1$I AS w
            SET table_oid = c.oid::bigint
            FROM pg_catalog.pg_class AS c
            JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
            WHERE w.table_oid IS NULL
              AND w.status IN (0, 1, 2)
              AND n.nspname = w.table_schema
              AND c.relname = w.table_name
        $sql$, target);
    END LOOP;
END
$$;

ALTER TABLE bbo.background_operation_workers_cell_local
    ALTER COLUMN table_schema SET NOT NULL;
ALTER TABLE bbo.background_operation_workers
    ALTER COLUMN table_schema SET NOT NULL;

-- Names as Postgres holds them: at most 63 bytes (NAMEDATALEN - 1).
ALTER TABLE bbo.background_operation_workers_cell_local
    DROP CONSTRAINT IF EXISTS bowcl_table_schema_length,
    ADD CONSTRAINT bowcl_table_schema_length CHECK (octet_length(table_schema) BETWEEN 1 AND 63);
ALTER TABLE bbo.background_operation_workers
    DROP CONSTRAINT IF EXISTS bow_table_schema_length,
    ADD CONSTRAINT bow_table_schema_length CHECK (octet_length(table_schema) BETWEEN 1 AND 63);

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0004', 'table_identity')
ON CONFLICT (version) DO NOTHING;
