"""The package version, in one place (modules that record it import it from here)."""

__version__ = "0.1.0"
