"""The package version, in one place (read by the package and the command line)."""

__version__ = "0.2.0"
