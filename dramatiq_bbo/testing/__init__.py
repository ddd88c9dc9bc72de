"""Private Postgres servers for tests and the demo: the embedded one, and servers in a
configuration of our choosing."""
