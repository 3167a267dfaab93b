"""Metrics for safe sampling on toys: harmful rate, distances to the safe data, mode coverage,
off-manifold distance, and the bit-for-bit unchanged fraction."""

from __future__ import annotations

import torch

from .gmm import GaussianMixture


def _check_2d(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"{name} must be a tensor of shape (N, d)")
    return x


def harmful_rate(x: torch.Tensor, mixture: GaussianMixture, harmful, *, x_is=None) -> float:
    """Fraction of samples whose most likely component (posterior argmax) is harmful.

    x (N, d); harmful a bool mask (K,) over the mixture's components. ``x_is`` optionally maps
    x to the mixture's space first (e.g. a linear encoder, when the data mixture is singular
    and its latent mixture is used).
    """
    x = _check_2d("x", x)
    if x_is is not None:
        x = x_is(x)
    harmful = torch.as_tensor(harmful, dtype=torch.bool)
    if harmful.shape != (mixture.num_components,):
        raise ValueError(f"harmful must be a bool mask of shape ({mixture.num_components},)")
    labels = mixture.component_log_probs(x).argmax(-1)
    return float(harmful[labels].double().mean())


def threshold_rate(x: torch.Tensor, density, threshold: float) -> float:
    """Fraction of samples with ``density.prob(x) >= threshold``."""
    with torch.no_grad():
        return float((density.prob(x) >= threshold).double().mean())


def _subsample(x: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    if x.shape[0] <= n:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:n]]


def energy_distance(
    x: torch.Tensor, y: torch.Tensor, *, max_samples: int = 2000, seed: int = 0
) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (>= 0, 0 iff equal laws).

    x (N, d), y (M, d); each subsampled to ``max_samples`` (seeded) to keep it O(max_samples²).
    """
    x, y = _check_2d("x", x).double(), _check_2d("y", y).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    g = torch.Generator().manual_seed(seed)
    x, y = _subsample(x, max_samples, g), _subsample(y, max_samples, g)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bandwidth: float = 0.5,
    max_samples: int = 2000,
    seed: int = 0,
) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel of width ``bandwidth`` (biased V-statistic)."""
    x, y = _check_2d("x", x).double(), _check_2d("y", y).double()
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    g = torch.Generator().manual_seed(seed)
    x, y = _subsample(x, max_samples, g), _subsample(y, max_samples, g)

    def k(a, b):
        return torch.exp(-(torch.cdist(a, b) ** 2) / (2 * bandwidth**2)).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y))


def distance_to_modes(x: torch.Tensor, mixture: GaussianMixture) -> torch.Tensor:
    """Euclidean distance of each sample to the nearest component mean, shape (N,)."""
    x = _check_2d("x", x).double()
    return torch.cdist(x, mixture.means).min(-1).values


def mode_coverage(x: torch.Tensor, mixture: GaussianMixture, *, min_fraction: float = 0.2) -> float:
    """Fraction of components that receive at least ``min_fraction`` × their expected share
    (weight × N) of the samples (assignment by posterior argmax)."""
    x = _check_2d("x", x)
    labels = mixture.component_log_probs(x).argmax(-1)
    counts = torch.bincount(labels, minlength=mixture.num_components).double()
    expected = mixture.weights * x.shape[0]
    return float((counts >= min_fraction * expected).double().mean())


def off_manifold_distance(x: torch.Tensor, basis: torch.Tensor, origin=None) -> torch.Tensor:
    """Distance of each sample to the affine subspace origin + span(basis), shape (N,).

    basis (d, k) with orthonormal columns; origin (d,) or None (the subspace through 0).
    """
    x = _check_2d("x", x).double()
    U = basis.double()
    if U.ndim != 2 or U.shape[0] != x.shape[1]:
        raise ValueError(f"basis must have shape ({x.shape[1]}, k), got {tuple(U.shape)}")
    r = x - (0 if origin is None else torch.as_tensor(origin, dtype=torch.float64))
    return (r - (r @ U) @ U.T).norm(dim=-1)


def unchanged_mask(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bool (N,): rows of a and b that are bit for bit equal. a, b of shape (N, ...)."""
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return (a == b).reshape(a.shape[0], -1).all(-1) & ~(a.isnan().reshape(a.shape[0], -1).any(-1))


def unchanged_fraction(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of rows of a and b that are bit for bit equal."""
    return float(unchanged_mask(a, b).double().mean())
