"""Benchmark harnesses (`segparts eval ...`)."""
