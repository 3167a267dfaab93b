"""Analytic harm densities for toy problems (Gaussian mixtures, float64)."""

from __future__ import annotations

import torch

from ..core.density import HarmDensity
from .gmm import GaussianMixture


class _HoldsMixture(HarmDensity):
    """A density over a `GaussianMixture` that ``.to(device)`` moves with it."""

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.mixture = self.mixture.to(self._where.device)
        return self


class GaussianMixtureDensity(_HoldsMixture):
    """p_h(x) = Σ_k w_k N(x; μ_k, Σ_k): an analytic harm density over "harmful" modes.

    Its values live in [0, ∞) (a density, not a probability), so a threshold on ``prob`` is on
    that scale; `HarmPosteriorDensity` gives a normalised variant in [0, 1].

    Args:
        means (K, d), covs (K, d, d) (or (K,) / number: isotropic variances), weights (K,).
    Shapes: x (B, d) -> (B,). Computed in float64.
    """

    def __init__(self, means, covs, weights=None):
        super().__init__()
        self.mixture = GaussianMixture(means, covs, weights)
        self.register_buffer("_where", torch.empty(0, dtype=torch.float64), persistent=False)

    @classmethod
    def from_mixture(cls, mixture: GaussianMixture) -> GaussianMixtureDensity:
        return cls(mixture.means, mixture.covs, mixture.weights)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixture.log_prob(x)


class HarmPosteriorDensity(_HoldsMixture):
    """Normalised harm density: the posterior probability of the harmful components.

    Under a mixture of harmful and safe components,
    ``prob(x) = P(harmful | x) = Σ_{k harmful} r_k(x)`` in [0, 1], so a threshold has a meaning
    (0.5: more likely harmful than safe). What guidance differentiates is chosen by
    ``gradient``:

    * ``"harmful"`` (default): log of the harmful sub-mixture density, log Σ_{k harmful} w_k N_k(x).
      Its gradient pushes away from the harmful modes everywhere, and grows with the
      distance to them — pair it with a threshold.
    * ``"posterior"``: log P(harmful | x). Bounded push toward the safe modes, but it vanishes
      deep inside a harmful mode.

    Args:
        mixture: the full mixture (harmful and safe components).
        harmful: bool mask of shape (K,) marking the harmful components.
        gradient: "harmful" or "posterior".
    """

    GRADIENTS = ("harmful", "posterior")
    prob_range = (0.0, 1.0)

    def __init__(self, mixture: GaussianMixture, harmful, gradient: str = "harmful"):
        super().__init__()
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(
                f"mixture must be a safescore.toy.GaussianMixture, got {type(mixture).__name__}"
            )
        harmful = torch.as_tensor(harmful, dtype=torch.bool)
        if harmful.shape != (mixture.num_components,):
            raise ValueError(
                f"harmful must be a bool mask of shape ({mixture.num_components},), got {tuple(harmful.shape)}"
            )
        if not harmful.any() or harmful.all():
            raise ValueError("harmful must mark at least one harmful and one safe component")
        if gradient not in self.GRADIENTS:
            raise ValueError(f"gradient must be one of {self.GRADIENTS}, got {gradient!r}")
        self.mixture = mixture
        self.register_buffer("harmful", harmful, persistent=False)
        self.register_buffer("_where", torch.empty(0, dtype=torch.float64), persistent=False)
        self.gradient = gradient

    def log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """log P(harmful | x), shape (B,)."""
        comp = self.mixture.component_log_probs(x)
        return torch.logsumexp(comp[:, self.harmful], -1) - torch.logsumexp(comp, -1)

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_posterior(x).exp()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient == "posterior":
            return self.log_posterior(x)
        comp = self.mixture.component_log_probs(x)
        # log of the (unnormalised) harmful part: log Σ_{k harmful} w_k N_k(x)
        return torch.logsumexp(comp[:, self.harmful], -1)


class LogisticHarmDensity(HarmDensity):
    """A linear classifier as harm density: P(harmful | x) = σ(w·x + b).

    Useful on linear-manifold toys: a classifier's weight ``w`` generally has components off
    the data subspace, so its gradient pushes ambient samples off the manifold.
    Shapes: w (d,), x (B, d) -> (B,).
    """

    prob_range = (0.0, 1.0)

    def __init__(self, weight, bias: float = 0.0):
        super().__init__()
        w = torch.as_tensor(weight, dtype=torch.float64)
        if w.ndim != 1:
            raise ValueError(f"weight must have shape (d,), got {tuple(w.shape)}")
        self.register_buffer("weight", w)
        self.bias = float(bias)

    def _logit(self, x):
        if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"x must have shape (B, {self.weight.shape[0]}), got {tuple(x.shape)}")
        return x.to(torch.float64) @ self.weight + self.bias

    def prob(self, x):
        return torch.sigmoid(self._logit(x))

    def log_prob(self, x):
        return torch.nn.functional.logsigmoid(self._logit(x))
