"""Read-only organizations: the pluggable check and the hold it puts on an organization's
operations (:mod:`.check`), and the default check's table (:mod:`.flags`)."""

from .flags import (
    ReadOnlyOrganization,
    clear_read_only,
    mark_read_only,
    read_only_organizations,
)

__all__ = ["ReadOnlyOrganization", "clear_read_only", "mark_read_only", "read_only_organizations"]
