-- Named queries of the tracked bulk item operations (dramatiq_bbo.tracking): counters that
-- move only by conditional UPDATEs, the one finalising UPDATE, the flags, and the purge.
-- Every reader filters on expires_at > bbo.now(): an expired entry is invisible at once, before
-- the purge deletes it.

-- name: tracking_create
-- description: Create a tracked operation unless its type's flag is off (then no row); its expiry is now plus the TTL.
INSERT INTO bbo.tracked_operations (operation_type, user_id, parameters, total_items, expires_at)
SELECT %(operation_type)s, %(user_id)s, %(parameters)s::jsonb, %(total_items)s,
       bbo.now() + make_interval(secs => %(ttl_seconds)s)
WHERE NOT EXISTS (
    SELECT 1 FROM bbo.tracking_flags
    WHERE operation_type = %(operation_type)s AND NOT enabled
)
RETURNING id;

-- name: tracking_get
-- description: One live (not expired) tracked operation.
SELECT id, operation_type, user_id, parameters, status, total_items, successful_items,
       failed_items, created_at, expires_at, finished_at, notification_attempts,
       notification_error
FROM bbo.tracked_operations
WHERE id = %(id)s AND expires_at > bbo.now();

-- name: tracking_get_failed_items
-- description: The failed items of a live tracked operation, in the order they were recorded.
SELECT f.entity_id, f.entity_type, f.entity_name, f.entity_full_path, f.error_message,
       f.error_code, f.created_at
FROM bbo.tracked_failed_items f
JOIN bbo.tracked_operations o ON o.id = f.tracked_operation_id
WHERE f.tracked_operation_id = %(id)s AND o.expires_at > bbo.now()
ORDER BY f.id;

-- name: tracking_delete
-- description: Delete a tracked operation and its failed items; says whether it was still live.
DELETE FROM bbo.tracked_operations
WHERE id = %(id)s
RETURNING expires_at > bbo.now() AS live;

-- name: tracking_record
-- description: Count outcomes of a live, unfinished tracked operation and insert its failed items, only if they stay within its total (no row otherwise); the update that reaches the total finishes it, and only that one returns finished = true.
WITH counted AS (
    UPDATE bbo.tracked_operations
    SET successful_items = successful_items + %(successful)s,
        failed_items = failed_items + %(failed)s,
        status = CASE
            WHEN successful_items + failed_items + %(successful)s + %(failed)s >= total_items
            THEN 'finished' ELSE 'running' END,
        finished_at = CASE
            WHEN successful_items + failed_items + %(successful)s + %(failed)s >= total_items
            THEN bbo.now() END,
        notification_claimed_at = CASE
            WHEN successful_items + failed_items + %(successful)s + %(failed)s >= total_items
            THEN bbo.now() END
    WHERE id = %(id)s
      AND expires_at > bbo.now()
      AND status <> 'finished'
      AND successful_items + failed_items + %(successful)s + %(failed)s <= total_items
    RETURNING status = 'finished' AS finished
), items AS (
    INSERT INTO bbo.tracked_failed_items (
        tracked_operation_id, entity_id, entity_type, entity_name, entity_full_path,
        error_message, error_code
    )
    SELECT %(id)s, item.entity_id, item.entity_type, item.entity_name, item.entity_full_path,
           item.error_message, item.error_code
    FROM unnest(
        %(entity_ids)s::text[], %(entity_types)s::text[], %(entity_names)s::text[],
        %(entity_full_paths)s::text[], %(error_messages)s::text[], %(error_codes)s::text[]
    ) WITH ORDINALITY AS item(entity_id, entity_type, entity_name, entity_full_path,
                              error_message, error_code, n)
    WHERE EXISTS (SELECT 1 FROM counted)
    ORDER BY item.n
)
SELECT finished FROM counted;

-- name: tracking_state
-- description: Why an update found no row: whether the operation exists and is live, and its counts.
SELECT status, total_items, successful_items + failed_items AS counted, expires_at > bbo.now() AS live
FROM bbo.tracked_operations
WHERE id = %(id)s;

-- name: tracking_set_total
-- description: Change the total of a live, unfinished tracked operation, never below what is already counted.
UPDATE bbo.tracked_operations
SET total_items = %(total_items)s
WHERE id = %(id)s
  AND expires_at > bbo.now()
  AND status <> 'finished'
  AND successful_items + failed_items <= %(total_items)s
RETURNING id;

-- name: tracking_finish
-- description: Finish a tracked operation whose outcomes reached its total (after its total changed, or a total of 0); exactly one caller gets the row back, and it holds the notification claim.
UPDATE bbo.tracked_operations
SET status = 'finished', finished_at = bbo.now(), notification_claimed_at = bbo.now()
WHERE id = %(id)s
  AND status <> 'finished'
  AND successful_items + failed_items >= total_items
RETURNING id;

-- name: tracking_reclaim_notifications
-- description: Claim finished operations whose finaliser died before notifying (claim older than the grace period, no error recorded).
UPDATE bbo.tracked_operations
SET notification_claimed_at = bbo.now()
WHERE id IN (
    SELECT id FROM bbo.tracked_operations
    WHERE status = 'finished'
      AND notification_error IS NULL
      AND expires_at > bbo.now()
      AND notification_claimed_at < bbo.now() - make_interval(secs => %(grace_seconds)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: tracking_notification_failed
-- description: Keep on the tracked operation that its notification could not be sent, and why.
UPDATE bbo.tracked_operations
SET notification_attempts = notification_attempts + %(attempts)s,
    notification_error = %(error)s
WHERE id = %(id)s;

-- name: tracking_purge_failed_items
-- description: Delete at most limit failed items of expired tracked operations.
DELETE FROM bbo.tracked_failed_items
WHERE id IN (
    SELECT f.id
    FROM bbo.tracked_operations o
    JOIN bbo.tracked_failed_items f ON f.tracked_operation_id = o.id
    WHERE o.expires_at <= bbo.now()
    ORDER BY f.tracked_operation_id, f.id
    LIMIT %(limit)s
);

-- name: tracking_purge_operations
-- description: Delete at most limit expired tracked operations whose failed items are gone (so nothing cascades; rows locked by a writer are left to the next batch).
DELETE FROM bbo.tracked_operations
WHERE id IN (
    SELECT o.id FROM bbo.tracked_operations o
    WHERE o.expires_at <= bbo.now()
      AND NOT EXISTS (SELECT 1 FROM bbo.tracked_failed_items f WHERE f.tracked_operation_id = o.id)
    ORDER BY o.expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: tracking_flag_set
-- description: Turn tracking of an operation type on or off.
INSERT INTO bbo.tracking_flags (operation_type, enabled, changed_at, changed_by)
VALUES (%(operation_type)s, %(enabled)s, bbo.now(), %(changed_by)s)
ON CONFLICT (operation_type) DO UPDATE
SET enabled = excluded.enabled, changed_at = excluded.changed_at,
    changed_by = excluded.changed_by;

-- name: tracking_flag_get
-- description: Whether tracking of an operation type is on (no row: on).
SELECT coalesce(
    (SELECT enabled FROM bbo.tracking_flags WHERE operation_type = %(operation_type)s), true
);

-- name: tracking_flags
-- description: Every operation type whose flag was set, with who set it and when.
SELECT operation_type, enabled, changed_at, changed_by
FROM bbo.tracking_flags
ORDER BY operation_type;
