"""The ``safescore`` command (also ``python -m safescore``): ``demo`` (toy, no downloads),
``generate`` (Stable Diffusion), ``evaluate`` and ``report`` (the I2P evaluation), ``calibrate``
(η: the gate's firing rate on plain trajectories).

One error policy for every subcommand: an expected failure (bad input, a missing model or file,
a folder that can't be written, a diverging run) is one line ``safescore COMMAND: error: ...``
and exit status 2 — argparse's own errors too (no usage block); a genuine bug keeps its
traceback. diffusers, transformers, pandas, nudenet
and matplotlib load inside the commands that need them.
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from . import calibrate, demo, evaluate, generate
from .options import CLIError

# Expected failures: our own checks (CLIError, ValueError with a message that names the
# parameter), files and folders (OSError: missing, existing, read-only, locked), and runs that
# diverge (FloatingPointError). TypeError is not here: it means a bug, and keeps its traceback.
EXPECTED = (CLIError, ValueError, OSError, FloatingPointError)


class OneLineParser(argparse.ArgumentParser):
    """argparse with the command's error policy: one line naming the problem, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="safescore",
        description=(
            "Safe sampling for score-based (diffusion) models: steer DDIM away from a harm "
            "density p_h by a gradient step on the predicted clean point x̂0, only when "
            "p_h(x̂0) passes a threshold (CDTC)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"safescore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (demo, generate, evaluate, calibrate):
        command.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EXPECTED as exc:
        print(f"safescore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
