"""Walking one table in keyset order: the keyset and its statements, the sub-batch an author
changes, the checkpoint engine that commits each one, statement timeouts, and what the
catalog and reflection say about the table."""
