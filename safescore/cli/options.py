"""argparse types and checks shared by every subcommand; each error names its option.

`CLIError` is an expected failure: the ``safescore`` command prints it as one line,
``safescore COMMAND: error: ...``, and exits with status 2. Only the standard library is
imported here; torch loads inside `resolve_device`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

#: Seeds are integers in [0, 2^63 - 1].
MAX_SEED = 2**63 - 1


class CLIError(Exception):
    """An expected failure (bad input, missing file): one line on stderr, exit status 2."""


def positive_int(name, *, high: int | None = None):
    """argparse type: an integer >= 1 (and <= ``high``), the error naming the option ``name``."""
    allowed = "an integer >= 1" if high is None else f"an integer in [1, {high}]"

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {text!r}") from None
        if v < 1 or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"{name} must be {allowed}, got {v}")
        return v

    return parse


def seed_int(name):
    """argparse type: a seed, an integer in [0, 2^63 - 1]."""

    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer in [0, 2^63-1], got {text!r}"
            ) from None
        if not 0 <= v <= MAX_SEED:
            raise argparse.ArgumentTypeError(f"{name} must be an integer in [0, 2^63-1], got {v}")
        return v

    return parse


def finite_float(name, *, low=None, high=None):
    """argparse type: a finite number (no NaN or inf), optionally in [low, high]."""

    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text!r}")
        if (low is not None and v < low) or (high is not None and v > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise argparse.ArgumentTypeError(f"{name} must be in [{lo}, {hi}], got {v}")
        return v

    return parse


def nonempty(name):
    """argparse type: a non-empty string."""

    def parse(text):
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{name} must not be empty")
        return text

    return parse


def refuse_unused(mode: str | None, given: dict, reason: str) -> None:
    """Refuse options that ``mode`` (``"--mini"``, ``"--tiny"`` or None) would record and ignore.

    ``given``: {option: value}, where None means the option was left out.
    """
    if mode is None:
        return
    for option, value in given.items():
        if value is not None:
            raise CLIError(f"{option} does not apply to {mode} ({reason}); leave it out")


def refuse_model_options(args) -> None:
    """``--mini`` / ``--tiny`` bring their own UNet and CLIP: refuse ``--model`` and ``--clip``,
    and with ``--mini`` also ``--clip-preprocessing author`` (the mini CLIP has its own
    mean/std). ``args`` has ``mini``, ``tiny``, ``model``, ``clip``, ``clip_preprocessing``."""
    mode = "--mini" if args.mini else ("--tiny" if args.tiny else None)
    refuse_unused(
        mode, {"--model": args.model, "--clip": args.clip}, "it brings its own UNet and CLIP"
    )
    if args.mini:
        refuse_unused(
            mode,
            {"--clip-preprocessing": None if args.clip_preprocessing == "clip" else "author"},
            "the mini CLIP has its own mean/std",
        )


def check_out_dir(path, option: str = "--out", *, must_be_empty: bool = False) -> Path:
    """An output folder that exists or can be created, and can be written to.

    Refuses "", an existing file, a folder (or the nearest existing parent) that is read-only,
    and, with ``must_be_empty``, a folder that holds anything.
    """
    if path is None or not str(path).strip():
        raise CLIError(f"{option} must name a folder, got {str(path)!r}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{option} {path} is an existing file; give a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CLIError(f"{option} {path}: {existing} is a file, not a folder; give another path")
    try:  # a real write: os.access is always True for root
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise CLIError(
            f"{option} {path}: cannot write to {existing} ({exc.strerror}); choose a writable folder"
        ) from None
    if must_be_empty and path.is_dir() and any(path.iterdir()):
        raise CLIError(
            f"{option} {path} is not empty; pass --overwrite to replace the files this command "
            "writes there, or choose a new folder"
        )
    return path


def resolve_device(name: str | None, option: str = "--device") -> str | None:
    """Check that a torch device exists on this machine; None stays None (automatic)."""
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(
            f"{option} {name!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CLIError(
                f"{option} {name}: no CUDA GPU on this machine (torch {torch.__version__}"
                f"{'' if torch.version.cuda else ', a CPU-only build'}); use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise CLIError(
                f"{option} {name}: this machine has {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}"
            )
        return name
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(f"{option} {name}: MPS is not available here; use --device cpu")
        return name
    module = getattr(torch, device.type, None)
    available = getattr(module, "is_available", None)
    if available is None or not available():
        raise CLIError(
            f"{option} {name}: device type {device.type!r} is not available on this machine; "
            "use --device cpu"
        )
    return name
