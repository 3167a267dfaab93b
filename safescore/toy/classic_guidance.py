"""Classic conditional guidance, for comparison with safe sampling on the toys.

* `ClassifierGuidance` (Dhariwal & Nichol 2021): a time-dependent ("noisy") classifier
  log p(y | x_t, t) shifts the score in x_t space,

      ∇ log p(x_t | y) ≈ ∇ log p(x_t) + s ∇_{x_t} log p(y | x_t, t),
      i.e.  ε <- ε - s sqrt(1-ᾱ_t) ∇_{x_t} log p(y | x_t, t).

  s = 1 with the exact noisy posterior samples p(x | y); s > 1 sharpens, s < 0 steers away
  from y. It is a guidance object for `safescore.ddim_sample` (the classifier takes x_t,
  so the ε-model is not differentiated).
* `ClassifierFreeGuidance` (Ho & Salimans 2022): an ε-model wrapper
  ``ε = ε_uncond + w (ε_cond - ε_uncond)``; w = 1 is the conditional model, w > 1 amplifies the
  condition, w < 0 pushes away from it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from ..core.protocol import GuidanceOutput, GuidanceState
from ..core.schedules import NoiseSchedule, as_schedule
from ..core.steps import predict_x0
from .gmm import GaussianMixture

NoisyLogProb = Callable[[torch.Tensor, int], torch.Tensor]


def _check_scale(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def mixture_class_log_prob(
    mixture: GaussianMixture, class_mask, schedule: NoiseSchedule
) -> NoisyLogProb:
    """The exact noisy classifier of a toy: log P(y | x_t) = log Σ_{k in y} r_k(x_t) under the
    noised mixture p_t (means sqrt(ᾱ_t) μ_k, covariances ᾱ_t Σ_k + (1-ᾱ_t) I).

    Args:
        mixture: the clean data mixture (K components, dimension d).
        class_mask: bool mask (K,) of the components forming class y.
        schedule: the noise schedule defining ᾱ_t.
    Returns:
        ``log_prob(x_t (B, d), t) -> (B,)``, differentiable in x_t.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    schedule = as_schedule(schedule)
    mask = torch.as_tensor(class_mask, dtype=torch.bool)
    if mask.shape != (mixture.num_components,) or not mask.any():
        raise ValueError(
            f"class_mask must be a bool mask of shape ({mixture.num_components},) with a True"
        )
    cache: dict[int, GaussianMixture] = {}

    def log_prob(x_t: torch.Tensor, t) -> torch.Tensor:
        t = int(t)
        if t not in cache:
            cache[t] = mixture.noised(schedule.alpha_bar(t))
        comp = cache[t].component_log_probs(x_t)
        return torch.logsumexp(comp[:, mask], -1) - torch.logsumexp(comp, -1)

    return log_prob


class ClassifierGuidance:
    """Classifier guidance in x_t space with a noisy classifier (Dhariwal & Nichol 2021).

    ``ε <- ε - s sqrt(1-ᾱ_t) ∇_{x_t} log p(y | x_t, t)``: the score moves UP the classifier's
    log-probability of y for s > 0 (toward y) and down for s < 0 (away from y). The DDIM update
    uses the x̂0 recomputed from the guided ε.

    Args:
        log_prob: ``(x_t (B, ...), t) -> (B,)`` log p(y | x_t, t), differentiable in x_t
            (e.g. `mixture_class_log_prob`).
        scale: guidance scale s (any finite number; 1 = the exact conditional with an exact
            classifier).
    """

    differentiates_denoiser = False

    def __init__(self, log_prob: NoisyLogProb, scale: float = 1.0):
        if not callable(log_prob):
            raise TypeError(
                f"log_prob must be callable (x_t, t) -> (B,), got {type(log_prob).__name__}"
            )
        self.log_prob = log_prob
        self.scale = _check_scale("scale", scale)

    def __repr__(self) -> str:
        return f"ClassifierGuidance(scale={self.scale})"

    def gradient(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """∇_{x_t} log p(y | x_t, t), shape like x_t (B, ...)."""
        leaf = x_t.detach().requires_grad_(True)
        with torch.enable_grad():
            lp = self.log_prob(leaf, t)
            if not isinstance(lp, torch.Tensor) or lp.shape != (x_t.shape[0],):
                raise ValueError(
                    f"log_prob must return shape ({x_t.shape[0]},), got "
                    f"{getattr(lp, 'shape', type(lp).__name__)}"
                )
            (grad,) = torch.autograd.grad(lp.sum(), leaf)
        return grad

    def __call__(self, state: GuidanceState) -> GuidanceOutput:
        grad = self.gradient(state.x_t, state.t)
        if not torch.isfinite(grad).all():
            raise FloatingPointError(
                f"non-finite classifier gradient at step {state.step_index} (t={state.t})"
            )
        a_t = state.alpha_bar_t
        eps = state.eps - (self.scale * (1 - a_t) ** 0.5) * grad.to(state.eps.dtype)
        B = state.x_t.shape[0]
        return GuidanceOutput(
            eps=eps,
            x0_hat=predict_x0(state.x_t, eps, a_t),
            corrected=torch.full((B,), self.scale != 0, dtype=torch.bool),
        )


class ClassifierFreeGuidance:
    """Classifier-free guidance as an ε-model: ``ε = ε_u + w (ε_c - ε_u)`` (Ho & Salimans 2022).

    Args:
        eps_cond: the conditional ε-model ``(x_t, t) -> ε`` (trained with the condition).
        eps_uncond: the unconditional ε-model.
        scale: w; 0 = unconditional, 1 = conditional, > 1 amplified, < 0 pushed away.
    Shapes: x_t (B, ...) -> (B, ...). Use it wherever an ε-model goes (``ddim_sample``).
    """

    def __init__(self, eps_cond, eps_uncond, scale: float):
        for name, fn in (("eps_cond", eps_cond), ("eps_uncond", eps_uncond)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable (x_t, t) -> eps, got {type(fn).__name__}")
        self.eps_cond, self.eps_uncond = eps_cond, eps_uncond
        self.scale = _check_scale("scale", scale)

    def __repr__(self) -> str:
        return f"ClassifierFreeGuidance(scale={self.scale})"

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        eps_u = self.eps_uncond(x_t, t)
        eps_c = self.eps_cond(x_t, t)
        return eps_u + self.scale * (eps_c - eps_u)
