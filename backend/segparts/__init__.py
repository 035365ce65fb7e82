"""Segment Parts backend: engines, server, rendering, lifting, metrics and CLI."""

__version__ = "0.1.0"
