"""Cells: moving an organization's operations from one cell's database to another's.

An organization-scoped operation has a uuid id so it can leave its cell: :func:`move_organization`
(:mod:`.move`) pauses the organization's operations at the source, waits for their running
jobs to reach a checkpoint, copies each operation and its job history to the target (inert
there), deletes them at the source, then resumes them at the target as they were. Each step
commits with the move's record (:mod:`.record`) in the database it changes, so a re-run
finishes a half-done move and no operation is ever live in both databases. Cell-local
operations never move. See docs/cells.md.
"""
