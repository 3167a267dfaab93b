"""The ``safescore`` command line: one parser, one error policy (`safescore.cli.main`)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
