"""Benchmarks (make bench). Never part of the test suite."""
