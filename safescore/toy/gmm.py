"""Gaussian mixtures with closed-form log-density, score and the exact ε-oracle of their noising.

A mixture p(x) = Σ_k w_k N(x; μ_k, Σ_k) noised by the forward process
x_t = sqrt(ᾱ) x_0 + sqrt(1-ᾱ) ε is again a mixture, with means sqrt(ᾱ) μ_k and covariances
ᾱ Σ_k + (1-ᾱ) I. Its score is Σ_k r_k(x) (-C_k^{-1}(x - m_k)) with responsibilities r_k, and
the optimal ε-model is ε*(x_t, t) = -sqrt(1-ᾱ_t) ∇ log p_t(x_t). All math is float64 and
vectorised over samples and components (no Python loops).
"""

from __future__ import annotations

import math

import torch

from ..core.schedules import NoiseSchedule, as_schedule


def _as64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


class GaussianMixture:
    """A mixture of K Gaussians in R^d (float64).

    Args:
        means: shape (K, d).
        covs: shape (K, d, d) symmetric positive semi-definite; also accepted: (K,) or a
            number (isotropic variances), or (K, d) (diagonal variances).
        weights: shape (K,), positive; normalised to sum to 1. Default: uniform.

    Components with singular covariance (data on a subspace) can be sampled and noised; their
    ``log_prob`` is defined only after noising (ᾱ < 1).
    """

    def __init__(self, means, covs, weights=None):
        means = _as64(means)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise ValueError("means must be finite (no NaN or inf)")
        K, d = means.shape
        covs = _as64(covs)
        if covs.ndim == 0:
            covs = covs * torch.eye(d, dtype=torch.float64).expand(K, d, d).clone()
        elif covs.ndim == 1:
            if covs.shape[0] != K:
                raise ValueError(
                    f"covs of shape (K,) must have K={K} variances, got {covs.shape[0]}"
                )
            covs = covs[:, None, None] * torch.eye(d, dtype=torch.float64)
        elif covs.ndim == 2:
            if covs.shape != (K, d):
                raise ValueError(
                    f"diagonal covs must have shape ({K}, {d}), got {tuple(covs.shape)}"
                )
            covs = torch.diag_embed(covs)
        if covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(covs.shape)}")
        if not torch.isfinite(covs).all():
            raise ValueError("covs must be finite (no NaN or inf)")
        if not torch.allclose(covs, covs.transpose(-1, -2), atol=1e-10):
            raise ValueError("covs must be symmetric")
        low = torch.linalg.eigvalsh(covs).min(dim=-1).values  # (K,)
        scale = covs.diagonal(dim1=-2, dim2=-1).abs().amax(dim=-1).clamp_min(1.0)
        if (low < -1e-10 * scale).any():
            k = int((low < -1e-10 * scale).nonzero()[0])
            raise ValueError(
                f"covs must be positive semi-definite: component {k} has eigenvalue "
                f"{float(low[k]):.3g} < 0 (variances must be >= 0)"
            )
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = _as64(weights)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got {tuple(weights.shape)}")
        if (weights <= 0).any() or not torch.isfinite(weights).all():
            raise ValueError("weights must be positive and finite")
        self.means = means
        self.covs = covs
        self.weights = weights / weights.sum()

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device) -> GaussianMixture:
        """The same mixture with its tensors on ``device`` (still float64)."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = object.__new__(GaussianMixture)  # already checked: no validation pass on device
        moved.means, moved.covs = self.means.to(device), self.covs.to(device)
        moved.weights = self.weights.to(device)
        return moved

    def subset(self, mask) -> GaussianMixture:
        """The mixture of the components selected by a bool mask (K,), weights renormalised."""
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (self.num_components,) or not mask.any():
            raise ValueError(
                f"mask must be a bool tensor of shape ({self.num_components},) with a True"
            )
        return GaussianMixture(self.means[mask], self.covs[mask], self.weights[mask])

    # ----------------------------------------------------------------- sampling
    def sample(
        self, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False
    ):
        """Draw n samples, shape (n, d) float64 (and component labels (n,) if asked)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        # Cholesky of PSD covariances via eigendecomposition (works for singular ones too).
        evals, evecs = torch.linalg.eigh(self.covs)
        # eigenvalues at round-off level are zeros of a singular covariance: keep them exact
        tol = evals.abs().amax(-1, keepdim=True) * self.dim * torch.finfo(torch.float64).eps * 10
        evals = torch.where(evals > tol, evals, torch.zeros_like(evals))
        roots = evecs * evals.sqrt()[:, None, :]  # (K, d, d): root @ root.T = cov
        x = self.means[labels] + torch.einsum("nij,nj->ni", roots[labels], z)
        return (x, labels) if return_labels else x

    # ----------------------------------------------------------------- densities
    def _precision(self):
        """Cached precision matrices (K, d, d) and log-determinants (K,) of the covariances."""
        if getattr(self, "_prec", None) is None:
            chol = torch.linalg.cholesky(self.covs)  # raises for singular covariances
            eye = torch.eye(self.dim, dtype=torch.float64).expand_as(self.covs)
            self._prec = torch.cholesky_solve(eye, chol)
            self._logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return self._prec, self._logdet

    def _isotropic_variances(self):
        """(K,) variances if every covariance is a multiple of I (fast path), else None."""
        if getattr(self, "_iso", None) is None:
            var = torch.diagonal(self.covs, dim1=-2, dim2=-1).mean(-1)
            eye = torch.eye(self.dim, dtype=torch.float64)
            iso = torch.equal(self.covs, var[:, None, None] * eye) and bool((var > 0).all())
            self._iso = (var,) if iso else (None,)
        return self._iso[0]

    def _component_log_probs(self, x: torch.Tensor):
        """(B, K) log w_k + log N(x; μ_k, Σ_k), and Σ_k^{-1}(x - μ_k) (B, K, d) or None."""
        const = torch.log(self.weights) - 0.5 * self.dim * math.log(2 * math.pi)
        var = self._isotropic_variances()
        if var is not None:  # Σ_k = v_k I: |x - μ_k|² from one matrix product, no (B, K, d) tensor
            sq = (x * x).sum(-1, keepdim=True) - 2 * x @ self.means.T + (self.means**2).sum(-1)
            sq = sq.clamp_min(0)
            return const - 0.5 * (self.dim * torch.log(var) + sq / var), None
        prec, logdet = self._precision()
        diff = x[:, None, :] - self.means[None]  # (B, K, d)
        sol = torch.einsum("kij,bkj->bki", prec, diff)  # Σ_k^{-1}(x - μ_k)
        mahal = (diff * sol).sum(-1)
        return const - 0.5 * (logdet + mahal), sol

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, Σ_k), shape (B, K), for x of shape (B, d)."""
        return self._component_log_probs(self._check_x(x))[0]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (B,), for x of shape (B, d)."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities r_k(x), shape (B, K)."""
        return torch.softmax(self.component_log_probs(x), dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form score ∇_x log p(x) = -Σ_k r_k(x) Σ_k^{-1}(x - μ_k), shape (B, d)."""
        x = self._check_x(x)
        comp, sol = self._component_log_probs(x)
        r = torch.softmax(comp, dim=-1)
        if sol is None:  # isotropic: -Σ_k r_k (x - μ_k) / v_k = -(x Σ_k r_k/v_k - (r/v) μ)
            rv = r / self._isotropic_variances()
            return -(x * rv.sum(-1, keepdim=True) - rv @ self.means)
        return -torch.einsum("bk,bkd->bd", r, sol)

    # ----------------------------------------------------------------- noising
    def noised(self, alpha_bar: float) -> GaussianMixture:
        """Law of x_t = sqrt(ᾱ) x_0 + sqrt(1-ᾱ) ε: means sqrt(ᾱ)μ_k, covs ᾱΣ_k + (1-ᾱ)I."""
        a = float(alpha_bar)
        if not (0 < a <= 1):
            raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(a**0.5 * self.means, a * self.covs + (1 - a) * eye, self.weights)

    def eps_model(self, schedule: NoiseSchedule):
        """The exact ε-oracle ``(x_t, t) -> -sqrt(1-ᾱ_t) ∇ log p_t(x_t)`` for ``schedule``.

        x_t of shape (B, d) (any float dtype; computed in float64, returned in x_t's dtype);
        t an integer train timestep.
        """
        schedule = as_schedule(schedule)
        cache: dict[int, GaussianMixture] = {}

        def oracle(x_t: torch.Tensor, t) -> torch.Tensor:
            t = int(t)
            if t not in cache:
                cache[t] = self.noised(schedule.alpha_bar(t))
            a = schedule.alpha_bar(t)
            score = cache[t].score(x_t.to(torch.float64))
            return (-((1 - a) ** 0.5) * score).to(x_t.dtype)

        oracle.mixture = self
        oracle.schedule = schedule
        return oracle

    def _check_x(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError("x must be a torch.Tensor of shape (B, d)")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        return x.to(torch.float64)
