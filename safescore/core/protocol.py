"""The guidance protocol: what a sampler hands a guidance object at its one guidance site
(`GuidanceState`) and what it gets back (`GuidanceOutput`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

EpsModel = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class GuidanceState:
    """What the sampler hands a guidance object at the guidance site of one step.

    Shapes: x_t, eps, x0_hat are (B, ...). ``eps`` and ``x0_hat`` are None when the guidance
    computes them itself (``differentiates_denoiser``).
    """

    x_t: torch.Tensor
    t: int
    t_next: int
    step_index: int
    num_steps: int
    alpha_bar_t: float
    eps: torch.Tensor | None
    x0_hat: torch.Tensor | None
    eps_model: EpsModel | None = None


@dataclass
class GuidanceOutput:
    """A guidance object's answer: the ε and x̂0 the DDIM update uses, and what it saw.

    harm: p_h(x̂0) before correction, shape (B,) (or None); corrected: bool mask, shape (B,).
    x0_hat_unguided: Tweedie's x̂0 before guidance, when the guidance computed ε itself.
    """

    eps: torch.Tensor
    x0_hat: torch.Tensor
    harm: torch.Tensor | None = None
    corrected: torch.Tensor | None = None
    x0_hat_unguided: torch.Tensor | None = None
