"""argparse types and checks shared by every subcommand; each error names its option.

`CLIError` is an expected failure: the ``safescore`` command prints it as one line,
``safescore COMMAND: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """An expected failure (bad input, missing file): one line on stderr, exit status 2."""


def positive_int(name):
    """argparse type: an integer >= 1, the error naming the option ``name``."""

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer >= 1, got {text!r}"
            ) from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1, got {v}")
        return v

    return parse
