"""Labelloop: a small pluggy-based data-science platform host."""

__version__ = "0.1.0"
