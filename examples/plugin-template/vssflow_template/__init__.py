"""A template vssflow plugin package."""

__version__ = "0.1.0"
