"""peewee models of the state tables, for application code and tests that read or fix state."""
