"""Benchmarks: repeatable scripts that print min / median / max. Never part of the tests."""
