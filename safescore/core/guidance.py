"""Guidance objects consulted by `safescore.ddim_sample` at its one guidance site.

Two ways to steer away from a harm density p_h:

* `SafeGuidance` — the thesis' x̂0-space unguidance (MPGD-style, He et al. 2023):
  ``x̂0 <- x̂0 - γ_t ∇_{x̂0} log p_h(x̂0)``, applied per sample only when
  ``p_h(x̂0) >= threshold`` (conditional diffusion trajectory correction, CDTC), then the DDIM
  update with the ORIGINAL ε. The gradient never flows through the ε-model.
* `NegativeGuidance` — the baseline, negative classifier guidance in x_t space:
  ``ε <- ε + γ_t sqrt(1-ᾱ_t) ∇_{x_t} log p_h(x̂0(x_t))``, i.e. the score is shifted by
  ``-γ_t ∇_{x_t} log p_h``. The gradient goes through the ε-model.

γ may be a number or a schedule: a `GammaSchedule` (called with the step index, the
timestep and the number of steps) or any callable ``(step_index, t) -> float``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch

from .density import DecodedDensity, grad_log_prob, prob_and_log_prob, prob_range
from .protocol import GuidanceOutput, GuidanceState
from .steps import predict_x0


# --------------------------------------------------------------------------- γ schedules
class GammaSchedule:
    """γ as a function of the step: ``schedule(step_index, t, num_steps) -> float >= 0``."""

    def __call__(self, step_index: int, t: int, num_steps: int | None = None) -> float:
        raise NotImplementedError


def _check_nonneg(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= value <= 1):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _fraction(step_index: int, num_steps: int | None) -> float:
    if num_steps is None:
        raise ValueError("this gamma schedule needs num_steps (the sampler passes it)")
    return step_index / max(num_steps - 1, 1)


@dataclass(frozen=True)
class ConstantGamma(GammaSchedule):
    """γ_t = gamma at every step."""

    gamma: float

    def __post_init__(self):
        _check_nonneg("gamma", self.gamma)

    def __call__(self, step_index, t, num_steps=None):
        return float(self.gamma)


@dataclass(frozen=True)
class LinearRampGamma(GammaSchedule):
    """γ goes linearly from ``start`` (first step, most noise) to ``end`` (last step)."""

    start: float
    end: float

    def __post_init__(self):
        _check_nonneg("start", self.start)
        _check_nonneg("end", self.end)

    def __call__(self, step_index, t, num_steps=None):
        u = _fraction(step_index, num_steps)
        return float(self.start + (self.end - self.start) * u)


@dataclass(frozen=True)
class WindowGamma(GammaSchedule):
    """γ inside a window of the trajectory, 0 outside (MPGD applies guidance mid-trajectory).

    The window is given as fractions of the trajectory, 0 = first step (pure noise) and
    1 = last step: guidance applies when ``start <= step_index / (num_steps - 1) <= end``.
    """

    gamma: float
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        _check_nonneg("gamma", self.gamma)
        _check_fraction("start", self.start)
        _check_fraction("end", self.end)
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must be >= start ({self.start})")

    def __call__(self, step_index, t, num_steps=None):
        u = _fraction(step_index, num_steps)
        return float(self.gamma) if self.start <= u <= self.end else 0.0


@dataclass(frozen=True)
class SignalScaledGamma(GammaSchedule):
    """γ_t = gamma · ᾱ_t^power: small at the noisy first steps, where x̂0 is a blur of the data
    and a large step throws it far off the manifold, and full at the end, where x̂0 is sharp.

    ``alphas_cumprod`` (T,): the noise schedule's ᾱ over the train timesteps t = 0..T-1.
    """

    gamma: float
    alphas_cumprod: tuple = field(repr=False)
    power: float = 0.5

    def __post_init__(self):
        _check_nonneg("gamma", self.gamma)
        _check_nonneg("power", self.power)
        abar = tuple(float(a) for a in self.alphas_cumprod)
        if not abar or not all(0 < a <= 1 for a in abar):
            raise ValueError("alphas_cumprod must be a non-empty sequence of numbers in (0, 1]")
        object.__setattr__(self, "alphas_cumprod", abar)

    def __call__(self, step_index, t, num_steps=None):
        t = int(t)
        if not 0 <= t < len(self.alphas_cumprod):
            raise ValueError(f"t must be in [0, {len(self.alphas_cumprod) - 1}], got {t}")
        return float(self.gamma) * self.alphas_cumprod[t] ** float(self.power)


def constant(gamma: float) -> ConstantGamma:
    """γ_t = gamma."""
    return ConstantGamma(gamma)


def linear_ramp(start: float, end: float) -> LinearRampGamma:
    """γ linear from ``start`` at the first step to ``end`` at the last."""
    return LinearRampGamma(start, end)


def window(gamma: float, start: float = 0.0, end: float = 1.0) -> WindowGamma:
    """γ = gamma between two fractions of the trajectory, 0 elsewhere."""
    return WindowGamma(gamma, start, end)


def signal_scaled(gamma: float, alphas_cumprod, power: float = 0.5) -> SignalScaledGamma:
    """γ_t = gamma · ᾱ_t^power (default √ᾱ_t: the weight of x̂0 in x_t). ``alphas_cumprod``:
    (T,) sequence or tensor, e.g. ``scheduler.alphas_cumprod``."""
    return SignalScaledGamma(gamma, tuple(float(a) for a in alphas_cumprod), power)


def _resolve_gamma(gamma, step_index: int, t: int, num_steps: int) -> float:
    if isinstance(gamma, GammaSchedule):
        value = gamma(step_index, t, num_steps)
    elif callable(gamma):
        value = gamma(step_index, t)
    else:
        value = gamma
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(
            f"gamma must give a finite number >= 0, got {value!r} at step {step_index}"
        )
    if value < 0:
        raise ValueError(f"gamma must be >= 0, got {value} at step {step_index}")
    return float(value)


def _check_gamma_arg(gamma):
    if callable(gamma):
        return gamma
    _check_nonneg("gamma", gamma)
    return float(gamma)


def _check_threshold(threshold, density):
    if threshold is None:
        return None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not math.isfinite(threshold)
    ):
        raise TypeError(f"threshold must be None or a finite number, got {threshold!r}")
    lo, hi = prob_range(density)
    if not lo <= threshold <= hi:
        raise ValueError(
            f"threshold must be in [{lo:g}, {hi:g}], the range of {type(density).__name__}.prob, "
            f"got {threshold:g}"
        )
    return float(threshold)


def _check_density(density):
    for method in ("prob", "log_prob"):
        if not callable(getattr(density, method, None)):
            raise TypeError(
                f"density must have prob(x) and log_prob(x) methods (a safescore HarmDensity), "
                f"got {type(density).__name__}"
            )
    return density


def _check_harm(density, harm, *, batch: int, step_index: int, t: int) -> None:
    if not isinstance(harm, torch.Tensor) or harm.shape != (batch,):
        raise ValueError(
            f"density.prob must return shape ({batch},), got "
            f"{getattr(harm, 'shape', type(harm).__name__)} at step {step_index} (t={t})"
        )
    lo, hi = prob_range(density)
    tol = 1e-6 * max(
        1.0, abs(lo) if math.isfinite(lo) else 1.0, abs(hi) if math.isfinite(hi) else 1.0
    )
    bad = ~torch.isfinite(harm) | (harm < lo - tol) | (harm > hi + tol)
    if bool(bad.any()):  # one host sync for the whole check
        value = float(harm[bad.nonzero()[0, 0]])
        raise FloatingPointError(
            f"density.prob returned {value} at step {step_index} (t={t}); "
            f"{type(density).__name__}.prob must be finite and in [{lo:g}, {hi:g}] "
            "(set prob_range on the density if its scale differs)"
        )


def _harm_of(density, x: torch.Tensor, step_index: int, t: int) -> torch.Tensor:
    with torch.no_grad():
        harm = density.prob(x)
    _check_harm(density, harm, batch=x.shape[0], step_index=step_index, t=t)
    return harm


def _check_grad(grad: torch.Tensor, step_index: int, t: int) -> None:
    if not torch.isfinite(grad).all():
        raise FloatingPointError(
            f"non-finite gradient of density.log_prob at step {step_index} (t={t})"
        )


@dataclass
class Correction:
    """Result of `SafeGuidance.correct`: new x̂0 (B, ...), p_h before (B,), mask (B,)."""

    x0_hat: torch.Tensor
    harm: torch.Tensor
    corrected: torch.Tensor
    gamma: float


# --------------------------------------------------------------------------- SafeGuidance
class SafeGuidance:
    """The thesis' safe sampler: x̂0-space unguidance with CDTC.

    At each step, with x̂0 the Tweedie prediction (shape (B, ...)):

    1. ``h = p_h(x̂0)`` (``density.prob``), shape (B,);
    2. for the samples with ``h >= threshold`` (all, when ``threshold is None``):
       ``x̂0 <- x̂0 - γ_t ∇_{x̂0} log p_h(x̂0)`` — a step DOWN the harm log-density, in x̂0 space;
    3. the sampler's DDIM update uses the corrected x̂0 with the original ε.

    The ε-model is never differentiated. Samples below the threshold are left bit for bit as
    they were, and when no sample passes, no gradient is computed at all.

    Args:
        density: a harm density with ``prob`` (what the threshold compares) and ``log_prob``
            (what is differentiated), e.g. `safescore.densities.HarmPosteriorDensity`.
        gamma: step size γ >= 0, or a schedule (`constant`, `linear_ramp`,
            `window`, or any callable ``(step_index, t) -> float``).
        threshold: CDTC threshold on ``density.prob``; None corrects every sample at every step
            (the thesis' base safe sampler).
        check_every: evaluate p_h (and correct) only every k-th step (1 = every step).
        encoder, decoder: optional autoencoder (MPGD-AE). Then the step is taken on the code
            ``z = encoder(x̂0)`` down ``∇_z log p_h(decoder(z))`` and ``x̂0 <- decoder(z')``:
            the corrected x̂0 stays on the decoder's manifold.
    """

    differentiates_denoiser = False

    def __init__(
        self, density, gamma, threshold=None, *, check_every: int = 1, encoder=None, decoder=None
    ):
        self.density = _check_density(density)
        if (encoder is None) != (decoder is None):
            raise ValueError("encoder and decoder must be given together (or neither)")
        for name, fn in (("encoder", encoder), ("decoder", decoder)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.encoder, self.decoder = encoder, decoder
        self.gamma = _check_gamma_arg(gamma)
        self.threshold = _check_threshold(threshold, self.density)
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be an integer >= 1, got {check_every!r}")
        self.check_every = check_every

    def __repr__(self) -> str:
        return (
            f"SafeGuidance(density={type(self.density).__name__}, gamma={self.gamma!r}, "
            f"threshold={self.threshold!r}, check_every={self.check_every})"
        )

    def correct(
        self, x0_hat: torch.Tensor, *, step_index: int = 0, t: int = 0, num_steps: int = 1
    ) -> Correction:
        """Apply the CDTC-gated x̂0 step to a batch x̂0 of shape (B, ...)."""
        B = x0_hat.shape[0]
        gamma = _resolve_gamma(self.gamma, step_index, t, num_steps)
        skip = gamma == 0.0 or step_index % self.check_every != 0
        if skip:  # outside the window / between checks: nothing evaluated, nothing changed
            nan = torch.full((B,), float("nan"), dtype=torch.float64, device=x0_hat.device)
            none = torch.zeros(B, dtype=torch.bool, device=x0_hat.device)
            return Correction(x0_hat, nan, none, gamma)
        if self.threshold is None and self.decoder is None:
            # Every sample is corrected: the check and the gradient share one evaluation.
            leaf = x0_hat.detach().requires_grad_(True)
            with torch.enable_grad():
                harm, log_p = prob_and_log_prob(self.density, leaf)
                (grad,) = torch.autograd.grad(log_p.sum(), leaf)
            _check_harm(self.density, harm, batch=B, step_index=step_index, t=t)
            _check_grad(grad, step_index, t)
            corrected = torch.ones(B, dtype=torch.bool, device=x0_hat.device)
            return Correction(x0_hat - gamma * grad.to(x0_hat.dtype), harm, corrected, gamma)
        # 1. Harm of the predicted clean point.
        harm = _harm_of(self.density, x0_hat, step_index, t)
        # 2. CDTC: which samples pass the threshold.
        if self.threshold is None:
            corrected = torch.ones(B, dtype=torch.bool, device=x0_hat.device)
        else:
            corrected = harm >= self.threshold
        if not bool(corrected.any()):
            return Correction(x0_hat, harm, corrected, gamma)
        # 3. x̂0 <- x̂0 - γ ∇_{x̂0} log p_h(x̂0), only for the passing samples.
        idx = corrected.nonzero(as_tuple=True)[0]
        x_sel = x0_hat[idx]
        if self.decoder is None:
            grad = grad_log_prob(self.density, x_sel)
            _check_grad(grad, step_index, t)
            x_new = x_sel - gamma * grad.to(x_sel.dtype)
        else:  # MPGD-AE: the same step on the autoencoder's code z
            with torch.no_grad():
                z = self.encoder(x_sel)
            grad = grad_log_prob(DecodedDensity(self.density, self.decoder), z)
            _check_grad(grad, step_index, t)
            with torch.no_grad():
                x_new = self.decoder(z - gamma * grad.to(z.dtype)).to(x_sel.dtype)
        x0_new = x0_hat.clone()
        x0_new[idx] = x_new
        return Correction(x0_new, harm, corrected, gamma)

    def __call__(self, state: GuidanceState) -> GuidanceOutput:
        c = self.correct(
            state.x0_hat, step_index=state.step_index, t=state.t, num_steps=state.num_steps
        )
        return GuidanceOutput(eps=state.eps, x0_hat=c.x0_hat, harm=c.harm, corrected=c.corrected)


# --------------------------------------------------------------------------- NegativeGuidance
class NegativeGuidance:
    """Negative classifier guidance in x_t space (the baseline the thesis compares with).

    ``ε <- ε + γ_t sqrt(1-ᾱ_t) ∇_{x_t} log p_h(x̂0(x_t))``, equivalently the score
    ∇ log p_t(x_t) is shifted by ``-γ_t ∇_{x_t} log p_h(x̂0(x_t))``. The gradient flows
    through the ε-model (x̂0 depends on x_t through ε), which costs memory and time and can
    leave the data manifold. The x̂0 used by DDIM is recomputed from the guided ε.

    Args:
        density: a harm density (``prob``, ``log_prob``).
        gamma: γ >= 0 or a schedule, as for `SafeGuidance`.
        threshold: optional gate on ``density.prob(x̂0)``; None guides every sample.
    """

    differentiates_denoiser = True

    def __init__(self, density, gamma, threshold=None):
        self.density = _check_density(density)
        self.gamma = _check_gamma_arg(gamma)
        self.threshold = _check_threshold(threshold, self.density)

    def __repr__(self) -> str:
        return (
            f"NegativeGuidance(density={type(self.density).__name__}, gamma={self.gamma!r}, "
            f"threshold={self.threshold!r})"
        )

    def __call__(self, state: GuidanceState) -> GuidanceOutput:
        if state.eps_model is None:
            raise ValueError("NegativeGuidance needs the eps_model (it differentiates through it)")
        gamma = _resolve_gamma(self.gamma, state.step_index, state.t, state.num_steps)
        a_t = state.alpha_bar_t
        # 1. ε and x̂0 with an autograd graph from x_t through the ε-model.
        x_t = state.x_t.detach().requires_grad_(True)
        with torch.enable_grad():
            eps = state.eps_model(x_t, state.t)
            if not isinstance(eps, torch.Tensor) or eps.shape != x_t.shape:
                raise ValueError(
                    f"eps_model must return a tensor of shape {tuple(x_t.shape)} "
                    f"at step {state.step_index} (t={state.t})"
                )
            x0_hat = predict_x0(x_t, eps, a_t)
            log_p = self.density.log_prob(x0_hat)
            (grad,) = torch.autograd.grad(log_p.sum(), x_t)
        eps, x0_hat = eps.detach(), x0_hat.detach()
        harm = _harm_of(self.density, x0_hat, state.step_index, state.t)
        if self.threshold is None:
            corrected = torch.full_like(harm, gamma > 0, dtype=torch.bool)
        else:
            corrected = (harm >= self.threshold) & (gamma > 0)
        if not torch.isfinite(grad).all():
            raise FloatingPointError(
                f"non-finite gradient through the eps_model at step {state.step_index} (t={state.t})"
            )
        # 2. Shift ε along ∇_{x_t} log p_h (classifier guidance with a minus sign).
        shift = (gamma * (1 - a_t) ** 0.5) * grad.to(eps.dtype)
        mask = corrected.view(-1, *([1] * (eps.ndim - 1))).to(eps.device)
        eps_new = torch.where(mask, eps + shift, eps)
        x0_new = predict_x0(state.x_t, eps_new, a_t)
        return GuidanceOutput(
            eps=eps_new, x0_hat=x0_new, harm=harm, corrected=corrected, x0_hat_unguided=x0_hat
        )
