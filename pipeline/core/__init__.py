"""Shared foundation: frozen values (types), the error hierarchy, atomic storage, transcript files."""
