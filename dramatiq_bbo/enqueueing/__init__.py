"""Enqueueing an operation: the public enqueue(), the checks of its arguments, which tables
an operation may touch, and the index check of its scope."""
