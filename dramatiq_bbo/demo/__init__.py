"""``dramatiq-bbo demo``: the library at work on a million rows, with nothing to set up.

It starts an embedded Postgres (or uses ``--dsn``), fills a table of todos, enqueues an
operation deleting the done ones last updated over a year ago, runs it on real dramatiq
workers over the dramatiq-pg broker in this process, and shows progress, the batch optimizer
at work and a health hold, then a summary; everything it started is stopped on the way out.
"""

from __future__ import annotations

from .run import DemoOptions, run_demo
from .summary import Summary

__all__ = ["DemoOptions", "Summary", "run_demo"]
