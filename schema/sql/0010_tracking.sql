-- dramatiq-bbo 0010: tracked bulk item operations (dramatiq_bbo.tracking).
--
-- Idempotent, like every file here.
--
-- bbo.tracked_operations: one row per bulk action a user started over many items (projects,
-- groups...): its counters, its status and its expiry. Counters only ever move by one
-- conditional UPDATE (never read-modify-write), and the checks below keep them within the
-- total, so concurrent workers cannot overcount. The row whose counters reach the total is
-- finished by exactly one UPDATE ... WHERE status <> 'finished' (the finaliser); it is
-- deleted once its notification was sent, or kept with notification_error when sending
-- failed, until it expires. Readers ignore rows past expires_at at once; the purge actor
-- deletes them in bounded batches (index on expires_at).
--
-- bbo.tracked_failed_items: the items that failed, with their error, for the notification.
-- Deleted with their operation (ON DELETE CASCADE) or first, in batches, by the purge.
--
-- bbo.tracking_flags: a per-operation-type switch; no row means tracking is on.

CREATE TABLE IF NOT EXISTS bbo.tracked_operations (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation_type          text NOT NULL,
    user_id                 bigint NOT NULL,
    parameters              jsonb NOT NULL DEFAULT '{}'::jsonb,
    status                  text NOT NULL DEFAULT 'pending',
    total_items             bigint NOT NULL,
    successful_items        bigint NOT NULL DEFAULT 0,
    failed_items            bigint NOT NULL DEFAULT 0,
    created_at              timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz NOT NULL,
    finished_at             timestamptz,
    notification_claimed_at timestamptz,
    notification_attempts   integer NOT NULL DEFAULT 0,
    notification_error      text,
    CONSTRAINT bto_status CHECK (status IN ('pending', 'running', 'finished')),
    CONSTRAINT bto_operation_type CHECK (char_length(operation_type) BETWEEN 1 AND 100),
    CONSTRAINT bto_counts CHECK (
        total_items >= 0 AND successful_items >= 0 AND failed_items >= 0
        AND successful_items + failed_items <= total_items
    ),
    CONSTRAINT bto_expiry CHECK (expires_at > created_at)
);

CREATE INDEX IF NOT EXISTS bbo_tracked_operations_expires_at
    ON bbo.tracked_operations (expires_at);

CREATE TABLE IF NOT EXISTS bbo.tracked_failed_items (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tracked_operation_id    bigint NOT NULL
                            REFERENCES bbo.tracked_operations (id) ON DELETE CASCADE,
    entity_id               text NOT NULL,
    entity_type             text NOT NULL,
    entity_name             text NOT NULL,
    entity_full_path        text NOT NULL,
    error_message           text NOT NULL,
    error_code              text NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT btfi_entity CHECK (
        char_length(entity_id) BETWEEN 1 AND 255
        AND char_length(entity_type) BETWEEN 1 AND 100
        AND char_length(entity_name) BETWEEN 1 AND 1000
        AND char_length(entity_full_path) BETWEEN 1 AND 2000
    ),
    CONSTRAINT btfi_error CHECK (
        char_length(error_message) BETWEEN 1 AND 4000
        AND error_code ~ '^[a-z][a-z0-9_]{0,63}$'
    )
);

CREATE INDEX IF NOT EXISTS bbo_tracked_failed_items_operation
    ON bbo.tracked_failed_items (tracked_operation_id, id);

CREATE TABLE IF NOT EXISTS bbo.tracking_flags (
    operation_type          text PRIMARY KEY,
    enabled                 boolean NOT NULL,
    changed_at              timestamptz NOT NULL DEFAULT now(),
    changed_by              text,
    CONSTRAINT btf_operation_type CHECK (char_length(operation_type) BETWEEN 1 AND 100)
);

INSERT INTO bbo.schema_migrations (version, name)
VALUES ('0010', 'tracking')
ON CONFLICT (version) DO NOTHING;
