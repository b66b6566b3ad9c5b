"""The package version, in one place (read by pyproject and written into every file)."""

__version__ = "0.2.0"
