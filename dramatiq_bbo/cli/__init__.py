"""The ``dramatiq-bbo`` command line: ``migrate`` and ``demo``."""
