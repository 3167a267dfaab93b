"""Ready-made toy problems: a 2-D ring of Gaussians with harmful modes, and a Gaussian
mixture on a k-dimensional linear subspace of R^d (the linear-manifold setting)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..core.density import HarmDensity
from ..core.schedules import NoiseSchedule
from .densities import HarmPosteriorDensity
from .gmm import GaussianMixture


@dataclass
class ToyProblem:
    """A data distribution with some modes marked harmful, and a matching harm density.

    Attributes:
        name: short name.
        mixture: the data distribution (float64).
        harmful: bool mask (K,) of the harmful components.
        density: the harm density p_h (``prob`` in [0, 1]: posterior of the harmful modes).
        schedule: the noise schedule the oracle ε-model uses.
        threshold, gamma, negative_gamma: defaults that work for this problem (CDTC threshold,
            SafeGuidance γ, NegativeGuidance γ).
        basis, encoder, decoder: for a linear manifold, its orthonormal basis (d, k) and the
            linear (PCA) autoencoder z = Uᵀx, x = U z; None for the ring.
    """

    name: str
    mixture: GaussianMixture
    harmful: torch.Tensor
    density: HarmDensity
    schedule: NoiseSchedule
    threshold: float = 0.5
    gamma: float = 0.003
    negative_gamma: float = 0.03
    basis: torch.Tensor | None = None
    latent_mixture: GaussianMixture | None = None
    extras: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.mixture.dim

    @property
    def safe_mixture(self) -> GaussianMixture:
        """The data distribution restricted to the safe components."""
        return self.mixture.subset(~self.harmful)

    def eps_model(self):
        """Exact ε-oracle of the noised data mixture for ``self.schedule``."""
        return self.mixture.eps_model(self.schedule)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(0, I), shape (n, d), float64."""
        return torch.randn(n, self.dim, generator=generator, dtype=torch.float64)

    def encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Linear encoder z = Uᵀx, (B, d) -> (B, k). Only for linear-manifold problems."""
        self._need_basis()
        return x @ self.basis.to(x.dtype)

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        """Linear decoder x = U z, (B, k) -> (B, d). Only for linear-manifold problems."""
        self._need_basis()
        return z @ self.basis.to(z.dtype).T

    def _need_basis(self):
        if self.basis is None:
            raise ValueError(f"problem {self.name!r} has no linear manifold (basis is None)")


def ring_mixture(
    n_modes: int = 8, radius: float = 2.0, std: float = 0.1, weights=None
) -> GaussianMixture:
    """n_modes isotropic Gaussians (std ``std``) evenly spaced on a circle of ``radius``."""
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 2:
        raise ValueError(f"n_modes must be an integer >= 2, got {n_modes!r}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius!r}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    means = radius * torch.stack([angles.cos(), angles.sin()], -1)
    return GaussianMixture(means, torch.full((n_modes,), std**2, dtype=torch.float64), weights)


def _harmful_mask(harmful, n_modes: int) -> torch.Tensor:
    idx = list(harmful)
    if not idx or any(not isinstance(i, int) or not (0 <= i < n_modes) for i in idx):
        raise ValueError(f"harmful must list mode indices in [0, {n_modes - 1}], got {harmful!r}")
    mask = torch.zeros(n_modes, dtype=torch.bool)
    mask[idx] = True
    if mask.all():
        raise ValueError("harmful must leave at least one safe mode")
    return mask


def ring_problem(
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.1,
    harmful=(0, 1),
    schedule: NoiseSchedule | None = None,
) -> ToyProblem:
    """The 2-D ring: ``n_modes`` Gaussians on a circle, those indexed by ``harmful`` harmful.

    The harm density is the posterior probability of the harmful modes (``prob`` in [0, 1],
    threshold 0.5), differentiated through the log-density of the harmful modes.
    """
    mixture = ring_mixture(n_modes, radius, std)
    mask = _harmful_mask(harmful, n_modes)
    density = HarmPosteriorDensity(mixture, mask, gradient="harmful")
    return ToyProblem(
        name="ring",
        mixture=mixture,
        harmful=mask,
        density=density,
        schedule=schedule or NoiseSchedule.linear(),
        threshold=0.5,
        gamma=0.003 * (std / 0.1) ** 2,
        negative_gamma=0.03 * (std / 0.1) ** 2,
    )


def linear_manifold_problem(
    k: int = 2,
    d: int = 16,
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.1,
    harmful=(0, 1),
    off_manifold_bias: float = 0.5,
    seed: int = 0,
    schedule: NoiseSchedule | None = None,
) -> ToyProblem:
    """A ring of Gaussians living on a k-dimensional linear subspace of R^d.

    The data are x = U z with U an orthonormal basis (d, k) drawn with ``seed`` and z the ring
    mixture in its first two latent coordinates (std ``std`` in all k). The data covariances
    are singular: the data lie exactly on the subspace.

    The harm density is a posterior classifier on the ambient space, fitted "with a bias off the
    manifold", as real classifiers are (they never see off-manifold directions): its modes are
    the data modes shifted by ``off_manifold_bias`` along a direction orthogonal to the
    subspace, with full-rank covariance. Its gradient therefore has off-manifold components,
    which is what separates ambient guidance from guidance in the latent coordinates
    (``problem.encoder`` / ``problem.decoder``).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d <= k:
        raise ValueError(f"d must be an integer > k={k}, got {d!r}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    basis, perp = q[:, :k], q[:, k]
    ring = ring_mixture(n_modes, radius, std)
    latent_means = torch.zeros(n_modes, k, dtype=torch.float64)
    latent_means[:, :2] = ring.means
    latent = GaussianMixture(latent_means, torch.full((n_modes,), std**2, dtype=torch.float64))
    means = latent_means @ basis.T
    covs = (std**2) * basis @ basis.T
    mixture = GaussianMixture(means, covs.expand(n_modes, d, d).clone())
    mask = _harmful_mask(harmful, n_modes)
    harm_model = GaussianMixture(
        means + off_manifold_bias * perp,
        torch.full((n_modes,), std**2, dtype=torch.float64),
    )
    density = HarmPosteriorDensity(harm_model, mask, gradient="harmful")
    return ToyProblem(
        name=f"linear-manifold-k{k}-d{d}",
        mixture=mixture,
        harmful=mask,
        density=density,
        schedule=schedule or NoiseSchedule.linear(),
        threshold=0.5,
        gamma=0.003 * (std / 0.1) ** 2,
        negative_gamma=0.03 * (std / 0.1) ** 2,
        basis=basis,
        latent_mixture=latent,
        extras={"off_manifold_direction": perp},
    )
