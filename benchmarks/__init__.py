"""Benchmarks of DESIGN.md section 9 (see README.md). A package so that ``dramatiq`` worker
processes can import :mod:`benchmarks.app`."""
