"""``python -m safescore.cli ...``: the same command as ``python -m safescore ...``."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
