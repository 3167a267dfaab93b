"""Global switches. ``FAST`` is on when the ``CI`` environment variable is set (to anything but
"", "0" or "false"), or when ``SAFESCORE_FAST`` is; notebooks read it in their parameters cell
to run small versions of their experiments."""

from __future__ import annotations

import os


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


FAST: bool = _truthy("CI") or _truthy("SAFESCORE_FAST")
