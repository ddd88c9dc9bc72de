-- Read-only organizations (schema 0012, dramatiq_bbo.read_only): the default check's table.

-- name: read_only_organization_reason
-- description: The reason an organization is flagged read-only ('' when none was given); no row when it is writable.
SELECT coalesce(reason, '') FROM bbo.read_only_organizations
WHERE organization_id = %(organization_id)s;

-- name: read_only_reason_of_operation
-- description: A piece of steering_run_state for an organization operation under the default check: its organization's read-only reason ('' when none was given), NULL when writable.
(SELECT coalesce(r.reason, '') FROM bbo.read_only_organizations AS r
 WHERE r.organization_id = o.organization_id)

-- name: read_only_not_checked
-- description: A piece of steering_run_state where the table is not the check (a cell-local operation, or a custom check asked in Python): no reason.
NULL::text

-- name: read_only_mark
-- description: Flag an organization read-only, or change the reason of its flag (its since stays).
INSERT INTO bbo.read_only_organizations (organization_id, reason)
VALUES (%(organization_id)s, %(reason)s)
ON CONFLICT (organization_id) DO UPDATE SET reason = excluded.reason
RETURNING organization_id, reason, since;

-- name: read_only_clear
-- description: Lift an organization's read-only flag (nothing when it has none).
DELETE FROM bbo.read_only_organizations
WHERE organization_id = %(organization_id)s
RETURNING organization_id, reason, since;

-- name: read_only_list
-- description: Every flagged organization, the longest flagged first.
SELECT organization_id, reason, since FROM bbo.read_only_organizations
ORDER BY since, organization_id;
