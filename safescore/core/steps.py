"""The pure step math: Tweedie's x̂0, conversions between ε, score and x̂0, one DDIM step
and one DPM-Solver++ step. No loops, no guidance, no state.

Notation (DDIM, Song et al. 2021):

    x_t        current sample                 eps      ε_θ(x_t, t), the ε-model's prediction
    a_t        ᾱ_t  (alphas_cumprod[t])       a_prev   ᾱ of the next (less noisy) timestep
    x0_hat     x̂0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)             (Tweedie; DDIM eq. 9)
    eta        η_DDIM, the DDIM noise in [0, 1] (the DDIM paper's η; the name is diffusers')
    sigma      σ_t = η_DDIM sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev)  (DDIM eq. 16)
    x_prev     sqrt(a_prev) x0_hat + sqrt(1 - a_prev - σ_t²) eps + σ_t z   (DDIM eq. 12)

η alone is the CDTC threshold everywhere in this package (the thesis' symbol), never DDIM's noise.

The score is ∇ log p_t(x_t) = -eps / sqrt(1 - a_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


# --------------------------------------------------------------------------- conversions
def _coef(value, like: torch.Tensor) -> torch.Tensor:
    """A scalar as a 0-dim tensor of ``like``'s dtype (CPU, as diffusers keeps its alphas).

    A 0-dim tensor is used as it is (a scheduler's own ``alphas_cumprod[t]``), so that the
    arithmetic, dtype promotion included, is the scheduler's.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value
    return torch.as_tensor(float(value), dtype=like.dtype)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Tweedie's clean-point prediction x̂0 = (x_t - sqrt(1-ᾱ_t) ε) / sqrt(ᾱ_t).

    Args:
        x_t, eps: shape (B, ...). alpha_bar_t: ᾱ_t, a number in (0, 1].
    Returns: x̂0, shape (B, ...).
    """
    a_t = _coef(alpha_bar_t, x_t)
    return (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5


def x0_to_eps(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """The ε consistent with x_t and a clean point: ε = (x_t - sqrt(ᾱ_t) x0) / sqrt(1-ᾱ_t)."""
    a_t = _coef(alpha_bar_t, x_t)
    return (x_t - a_t**0.5 * x0) / (1 - a_t) ** 0.5


def eps_to_score(eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Score of the noised marginal: ∇ log p_t(x_t) = -ε / sqrt(1-ᾱ_t)."""
    return -eps / (1 - _coef(alpha_bar_t, eps)) ** 0.5


def score_to_eps(score: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Inverse of `eps_to_score`: ε = -sqrt(1-ᾱ_t) ∇ log p_t(x_t)."""
    return -((1 - _coef(alpha_bar_t, score)) ** 0.5) * score


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be a number in [0, 1] (0 = deterministic DDIM), got {eta!r}")
    return float(eta)


def _check_alpha(name: str, value):
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value  # a scheduler's own alphas_cumprod[t]: checked when the scheduler was built
    v = float(value)
    if not (0.0 < v <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {v}")
    return v


@dataclass
class DDIMStepOutput:
    """One DDIM step: ``prev_sample`` is x_{t_prev}, ``pred_original_sample`` the x̂0 it used."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t,
    alpha_bar_prev,
    *,
    eta: float = 0.0,
    x0_hat: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> DDIMStepOutput:
    """One DDIM update x_t -> x_prev (Song et al. 2021, eq. 12).

    The arithmetic follows diffusers' ``DDIMScheduler.step`` term by term, so with the same
    ᾱ values and dtype both give the same bits.

    Args:
        x_t: current sample, shape (B, ...).
        eps: ε-model prediction at (x_t, t), shape (B, ...).
        alpha_bar_t, alpha_bar_prev: ᾱ at t and at the next timestep, numbers in (0, 1].
        eta: the DDIM noise η_DDIM in [0, 1]; 0 is deterministic, 1 is DDPM-like.
        x0_hat: clean-point prediction to use instead of Tweedie's (e.g. a guided one).
        noise: the z of eq. 12, shape (B, ...); drawn from ``generator`` when None and eta > 0.
        generator: torch generator for z.
    Returns:
        DDIMStepOutput(prev_sample, pred_original_sample).
    """
    eta = _check_eta(eta)
    if eps.shape != x_t.shape:
        raise ValueError(
            f"eps must have the shape of x_t {tuple(x_t.shape)}, got {tuple(eps.shape)}"
        )
    a_t = _coef(_check_alpha("alpha_bar_t", alpha_bar_t), x_t)
    a_prev = _coef(_check_alpha("alpha_bar_prev", alpha_bar_prev), x_t)
    # 1. Predicted clean point x̂0 (eq. 9), unless given (guided).
    if x0_hat is None:
        x0_hat = (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    elif x0_hat.shape != x_t.shape:
        raise ValueError(
            f"x0_hat must have the shape of x_t {tuple(x_t.shape)}, got {tuple(x0_hat.shape)}"
        )
    # 2. σ_t (eq. 16).
    variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
    std_dev_t = eta * variance**0.5
    # 3. Direction pointing to x_t, then x_prev without noise (eq. 12).
    direction = (1 - a_prev - std_dev_t**2) ** 0.5 * eps
    x_prev = a_prev**0.5 * x0_hat + direction
    # 4. Add noise σ_t z when η_DDIM > 0.
    if eta > 0:
        if noise is None:
            gen_device = generator.device if generator is not None else x_t.device
            noise = torch.randn(
                x_t.shape, generator=generator, device=gen_device, dtype=x_t.dtype
            ).to(x_t.device)
        elif noise.shape != x_t.shape:
            raise ValueError(
                f"noise must have the shape of x_t {tuple(x_t.shape)}, got {tuple(noise.shape)}"
            )
        x_prev = x_prev + std_dev_t * noise
    return DDIMStepOutput(prev_sample=x_prev, pred_original_sample=x0_hat)


# --------------------------------------------------------------------------- DPM-Solver++(2M)
@dataclass
class DPMSolverCoefficients:
    """Per-step coefficients of DPM-Solver++ on a timestep grid, each of shape (n + 1,).

    With σ = sqrt((1-ᾱ)/ᾱ) the noise-to-signal ratio of a timestep (σ = 0 after the last):
    ``alphas`` α = 1/sqrt(σ² + 1) (= sqrt(ᾱ)), ``stds`` s = σ α (= sqrt(1-ᾱ)),
    ``lambdas`` λ = log α - log s (+inf at σ = 0). Computed in ``dtype`` as diffusers'
    ``DPMSolverMultistepScheduler`` does, so that its steps are reproduced bit for bit.
    """

    alphas: torch.Tensor
    stds: torch.Tensor
    lambdas: torch.Tensor

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod, timesteps, dtype) -> DPMSolverCoefficients:
        ac = torch.as_tensor(alphas_cumprod).to(dtype)
        sigmas = torch.cat([((1 - ac) / ac)[timesteps] ** 0.5, torch.zeros(1, dtype=dtype)])
        alphas = 1 / (sigmas**2 + 1) ** 0.5
        stds = sigmas * alphas
        return cls(alphas=alphas, stds=stds, lambdas=torch.log(alphas) - torch.log(stds))

    def data_prediction(self, i: int):
        """``(x_i, ε) -> x̂0_i = (x_i - s_i ε) / α_i``, diffusers' arithmetic for step i."""
        alpha, std = self.alphas[i], self.stds[i]
        return lambda x_t, eps: (x_t - std * eps) / alpha


def dpm_solver_step(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    i: int,
    coefs: DPMSolverCoefficients,
    x0_prev: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++ update x_i -> x_{i+1} (Lu et al. 2022, Algorithm 2, midpoint form).

    Args:
        x_t: x_i, shape (B, ...). x0_hat: the data prediction x̂0_i, shape (B, ...).
        i: the step index on the grid of ``coefs``.
        x0_prev: x̂0_{i-1} for the second-order (2M) update; None for first order.
    Returns:
        (first-order x_{i+1}, second-order x_{i+1}); both are the first-order update when
        ``x0_prev`` is None. The first-order update equals DDIM with ``eta = 0``.

        h = λ_{i+1} - λ_i,   r = h_prev / h,   D = x̂0_i + (x̂0_i - x̂0_{i-1}) / (2r)
        x_{i+1} = (s_{i+1}/s_i) x_i - α_{i+1} (e^{-h} - 1) D
    """
    alphas, stds, lambdas = coefs.alphas, coefs.stds, coefs.lambdas
    h = lambdas[i + 1] - lambdas[i]
    x_first = (stds[i + 1] / stds[i]) * x_t - (alphas[i + 1] * (torch.exp(-h) - 1.0)) * x0_hat
    if x0_prev is None:
        return x_first, x_first
    r = (lambdas[i] - lambdas[i - 1]) / h
    d1 = (1.0 / r) * (x0_hat - x0_prev)
    x_second = (
        (stds[i + 1] / stds[i]) * x_t
        - (alphas[i + 1] * (torch.exp(-h) - 1.0)) * x0_hat
        - 0.5 * (alphas[i + 1] * (torch.exp(-h) - 1.0)) * d1
    )
    return x_first, x_second
