"""Prefect 3 flows: a thin orchestration layer over :mod:`pipeline`."""
