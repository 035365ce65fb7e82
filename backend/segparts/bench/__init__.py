"""Benchmarks behind `segparts bench`; each prints a table of medians and how it was measured."""
