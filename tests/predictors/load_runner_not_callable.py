"""Loader test: ``Runner`` is neither a class nor callable."""
Runner = 5
