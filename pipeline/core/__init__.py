"""Shared foundation: frozen values (types), the error hierarchy, atomic storage and
transcript files."""
