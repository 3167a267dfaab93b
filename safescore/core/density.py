"""The harm density interface: ``prob`` (what a CDTC threshold compares) and ``log_prob``
(what guidance differentiates)."""

from __future__ import annotations

import math

import torch


def grad_log_prob(density, x: torch.Tensor) -> torch.Tensor:
    """∇_x log p_h(x) by autograd on a detached copy of x, shape like x (B, ...)."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        log_p = density.log_prob(leaf)
        (grad,) = torch.autograd.grad(log_p.sum(), leaf)
    return grad


def prob_and_log_prob(density, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(density.prob(x) without a graph, density.log_prob(x))`` for any density.

    Uses the density's own ``prob_and_log_prob`` (one shared forward pass) when it has one;
    otherwise two calls. The documented protocol (``prob`` and ``log_prob``) is enough.
    """
    shared = getattr(density, "prob_and_log_prob", None)
    if callable(shared):
        return shared(x)
    with torch.no_grad():
        p = density.prob(x.detach())
    return p, density.log_prob(x)


def prob_range(density) -> tuple[float, float]:
    """The closed interval ``density.prob`` lies in: its ``prob_range`` attribute, else [0, inf)."""
    lo, hi = getattr(density, "prob_range", (0.0, math.inf))
    return float(lo), float(hi)


class HarmDensity(torch.nn.Module):
    """Base class of harm densities p_h.

    Subclasses implement ``log_prob(x) -> (B,)``, differentiable in x, for x of shape (B, ...).
    ``prob(x) -> (B,)`` is the value a CDTC threshold is compared with; by default
    ``exp(log_prob(x))``. Densities whose threshold lives on another scale (a posterior in
    [0, 1], the largest of several CLIP similarities) override ``prob``.

    ``prob_range`` declares the closed interval ``prob`` lies in (default [0, inf): a density);
    guidance refuses a threshold outside it and a ``prob`` value outside it (or non-finite).

    It is a ``torch.nn.Module`` so that densities holding networks move with ``.to(device)``.
    """

    prob_range: tuple[float, float] = (0.0, math.inf)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x).exp()

    def prob_and_log_prob(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prob(x), log_prob(x))`` from one forward pass where a density can share it.

        ``prob`` carries no graph; ``log_prob`` is differentiable in x. Used by
        `safescore.SafeGuidance` when every sample is corrected (``threshold=None``), so the
        check and the gradient share one evaluation. Default: two calls.
        """
        with torch.no_grad():
            p = self.prob(x.detach())
        return p, self.log_prob(x)

    def grad_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """∇_x log p_h(x) by autograd, shape like x."""
        return grad_log_prob(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prob(x)


class DecodedDensity(HarmDensity):
    """A harm density pulled back through a decoder: p_h(decoder(z)).

    Lets guidance act on latent coordinates z (a linear autoencoder's code, a VAE latent)
    while p_h is defined on the data space. Shapes: z (B, ...) -> decoder(z) (B, ...) -> (B,).
    """

    def __init__(self, density: HarmDensity, decoder):
        super().__init__()
        if not callable(decoder):
            raise TypeError(f"decoder must be callable, got {type(decoder).__name__}")
        self.density = density
        self.decoder = decoder

    def prob(self, z):
        return self.density.prob(self.decoder(z))

    def log_prob(self, z):
        return self.density.log_prob(self.decoder(z))

    @property
    def prob_range(self) -> tuple[float, float]:
        return prob_range(self.density)

    def prob_and_log_prob(self, z):
        # one decode, shared by the check and the gradient
        return prob_and_log_prob(self.density, self.decoder(z))
