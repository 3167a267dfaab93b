"""The hint machinery shared by every notebook's checks.

A check calls the student's function through :func:`call_student` (a stub or a crash becomes a
hint), turns its output into a tensor of the expected shape with :func:`as_tensor`, and compares it
with the reference and with known-wrong variants through :func:`compare`; every failure is an
``AssertionError`` whose message starts with ``Hint:`` (:func:`fail`), every success prints one
line starting with ``✓`` (:func:`ok`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

F64 = torch.float64


def fail(message: str):
    raise AssertionError("Hint: " + message)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def call_student(fn: Callable, name: str, *args, **kwargs):
    """Call the student's function; a stub or a crash becomes a hint."""
    if not callable(fn):
        fail(f"`{name}` must be a function, got {type(fn).__name__}.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(
            f"`{name}` is not implemented yet: replace the `raise NotImplementedError()` line in "
            "the exercise cell above with your code, run that cell, then this one."
        )
    except AssertionError:
        raise
    except Exception as err:  # noqa: BLE001 - any crash of student code is reported as a hint
        fail(
            f"`{name}` raised {type(err).__name__}: {err}. Check the shapes in the docstring "
            "(x of shape (B, d), one value per sample where it says (B,))."
        )


def as_tensor(out, like: torch.Tensor, name: str, what: str = "its result") -> torch.Tensor:
    """The student's output as a tensor of ``like``'s shape, with graph and type problems hinted."""
    if out is None:
        fail(f"`{name}` returned None: did you forget the `return` statement?")
    if not isinstance(out, torch.Tensor):
        fail(f"`{name}` must return a torch.Tensor for {what}, got {type(out).__name__}.")
    if out.requires_grad:
        fail(
            f"{what} of `{name}` still carries an autograd graph (requires_grad=True): a missing "
            "`.detach()` — return plain values, not the graph used for the gradient."
        )
    if tuple(out.shape) != tuple(like.shape):
        fail(
            f"{what} of `{name}` has shape {tuple(out.shape)}, expected {tuple(like.shape)} "
            "(one row per sample)."
        )
    return out.to(like.dtype)


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))


def compare(
    out, ref, variants, generic: str, name: str, rtol=1e-9, atol=1e-9, nonfinite: str = ""
) -> None:
    """Pass if ``out`` matches ``ref``; else the hint of the first wrong variant it matches.

    ``nonfinite``: the hint for a NaN or ±inf where the reference is finite (an underflow or an
    overflow the exercise text warns of); by default a generic one.
    """
    if close(out, ref, rtol, atol):
        return
    for hint, value in variants:
        if value is not None and value.shape == out.shape and close(out, value, rtol, atol):
            fail(hint)
    bad = ~torch.isfinite(out) & torch.isfinite(ref)
    if bad.any():
        rows = int(bad.reshape(len(bad), -1).any(1).sum()) if bad.dim() else 1
        fail(
            nonfinite
            or f"`{name}` returned NaN or inf on {rows} row(s) where the reference is finite."
        )
    err = float((out - ref).abs().max())
    fail(f"{generic} (largest difference from the reference: {err:.3g}).")


def ok(message: str) -> None:
    print("✓ " + message)
