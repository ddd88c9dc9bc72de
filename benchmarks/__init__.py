"""Benchmarks of the project's performance goals (see README.md). A package so that
``dramatiq`` worker processes can import :mod:`benchmarks.app`."""
