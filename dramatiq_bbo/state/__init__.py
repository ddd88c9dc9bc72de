"""The state tables as Python sees them: their records (rows as dataclasses) and the store
that reads and writes them."""
