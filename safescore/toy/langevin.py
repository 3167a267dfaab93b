"""Langevin dynamics and annealed Langevin dynamics on a score function.

Unadjusted Langevin algorithm (ULA), for a target p with score s(x) = ∇ log p(x):

    x_{k+1} = x_k + α s(x_k) + sqrt(2α) z_k,        z_k ~ N(0, I)

Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) runs ULA on a sequence of smoothed
targets p_{σ_1}, ..., p_{σ_L} (σ_1 > ... > σ_L), each for ``steps_per_level`` steps, with step
size α_i = ε σ_i² / σ_L²: the wide targets move samples between modes, the narrow ones sharpen.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..core.schedules import NoiseSchedule, as_schedule
from ..core.steps import eps_to_score
from .gmm import GaussianMixture

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
LevelScoreFn = Callable[[torch.Tensor, object], torch.Tensor]


@dataclass
class LangevinResult:
    """Output of the Langevin samplers.

    samples: final x, shape (B, ...). trajectory: (num_recorded, B, ...) with the initial x first
    (every ``record_every``-th step), or None when ``record=False``.
    """

    samples: torch.Tensor
    trajectory: torch.Tensor | None = None


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_init(x_init) -> torch.Tensor:
    if not isinstance(x_init, torch.Tensor) or x_init.ndim < 1:
        raise TypeError("x_init must be a torch.Tensor of shape (B, ...)")
    return x_init


def _ula_step(score: torch.Tensor, x: torch.Tensor, step: float, generator) -> torch.Tensor:
    """x + α s(x) + sqrt(2α) z, z drawn from ``generator`` (CPU) in x's dtype."""
    if not isinstance(score, torch.Tensor) or score.shape != x.shape:
        raise ValueError(
            f"score must return a tensor of the shape of x {tuple(x.shape)}, "
            f"got {getattr(score, 'shape', type(score).__name__)}"
        )
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x + step * score + (2 * step) ** 0.5 * z


def langevin_sample(
    score: ScoreFn,
    x_init: torch.Tensor,
    *,
    step_size: float,
    num_steps: int,
    generator: torch.Generator | None = None,
    record: bool = False,
    record_every: int = 1,
) -> LangevinResult:
    """Unadjusted Langevin algorithm: x <- x + α s(x) + sqrt(2α) z, ``num_steps`` times.

    Args:
        score: ``s(x) -> ∇ log p(x)``, x of shape (B, ...) -> (B, ...).
        x_init: starting points, shape (B, ...).
        step_size: α > 0.
        num_steps: number of updates.
        generator: CPU torch generator for z (seed it for reproducibility).
        record, record_every: keep every ``record_every``-th iterate in ``trajectory``.
    Returns:
        `LangevinResult`.
    """
    x = _check_init(x_init)
    if not callable(score):
        raise TypeError(f"score must be callable x -> grad log p(x), got {type(score).__name__}")
    step = _check_positive("step_size", step_size)
    n = _check_count("num_steps", num_steps)
    every = _check_count("record_every", record_every)
    traj = [x]
    for k in range(n):
        with torch.no_grad():
            x = _ula_step(score(x), x, step, generator)
        if record and (k + 1) % every == 0:
            traj.append(x)
    return LangevinResult(samples=x, trajectory=torch.stack(traj) if record else None)


def annealed_step_sizes(noise_stds: Sequence[float], eps: float) -> list[float]:
    """Song & Ermon's step sizes α_i = ε σ_i² / σ_L² for noise levels σ_1 > ... > σ_L."""
    stds = [_check_positive("noise_stds[i]", float(s)) for s in noise_stds]
    if not stds:
        raise ValueError("noise_stds must hold at least one level")
    eps = _check_positive("eps", eps)
    return [eps * (s / stds[-1]) ** 2 for s in stds]


def annealed_langevin_sample(
    score: LevelScoreFn,
    x_init: torch.Tensor,
    levels: Sequence,
    step_sizes: Sequence[float],
    *,
    steps_per_level: int,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> LangevinResult:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level i (from the widest to the narrowest smoothing), ``steps_per_level`` ULA
    steps on ``score(x, levels[i])`` with step size ``step_sizes[i]``.

    Args:
        score: ``s(x, level) -> ∇ log p_level(x)``, x of shape (B, ...). A level is whatever the
            score understands: a noise std σ (`mixture_smoothed_score`) or a train
            timestep t (`eps_model_score`).
        x_init: starting points, shape (B, ...).
        levels: L noise levels, widest first.
        step_sizes: L step sizes (e.g. `annealed_step_sizes`).
        steps_per_level: ULA steps per level.
        generator: CPU torch generator.
        record: keep the iterate at the end of every level: trajectory (L+1, B, ...).
    Returns:
        `LangevinResult`.
    """
    x = _check_init(x_init)
    if not callable(score):
        raise TypeError("score must be callable (x, level) -> grad log p_level(x)")
    levels, step_sizes = list(levels), list(step_sizes)
    if not levels or len(levels) != len(step_sizes):
        raise ValueError(
            f"levels and step_sizes must be non-empty and of equal length, got {len(levels)} "
            f"and {len(step_sizes)}"
        )
    steps = [_check_positive("step_sizes[i]", a) for a in step_sizes]
    n = _check_count("steps_per_level", steps_per_level)
    traj = [x]
    for level, step in zip(levels, steps):
        for _ in range(n):
            with torch.no_grad():
                x = _ula_step(score(x, level), x, step, generator)
        if record:
            traj.append(x)
    return LangevinResult(samples=x, trajectory=torch.stack(traj) if record else None)


def mixture_smoothed_score(mixture: GaussianMixture) -> LevelScoreFn:
    """Exact score of the mixture convolved with N(0, σ² I): ``score(x, σ)``, x (B, d).

    The smoothed law p_σ = p * N(0, σ² I) is again a mixture, with covariances Σ_k + σ² I
    (variance exploding noising, as in Song & Ermon 2019). σ = 0 is allowed when the covariances
    are non-singular.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    eye = torch.eye(mixture.dim, dtype=torch.float64)
    cache: dict[float, GaussianMixture] = {}

    def score(x: torch.Tensor, sigma) -> torch.Tensor:
        s = float(sigma)
        if s < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        if s not in cache:
            cache[s] = GaussianMixture(mixture.means, mixture.covs + s**2 * eye, mixture.weights)
        return cache[s].score(x).to(x.dtype)

    return score


def eps_model_score(eps_model, schedule: NoiseSchedule) -> LevelScoreFn:
    """The score of an ε-model's noised marginal p_t: ``score(x, t) = -ε(x, t) / sqrt(1-ᾱ_t)``.

    Levels are train timesteps t; for annealed Langevin pass them in decreasing order, with step
    sizes proportional to 1 - ᾱ_t (the noise variance of level t).
    """
    schedule = as_schedule(schedule)
    if not callable(eps_model):
        raise TypeError(
            f"eps_model must be callable (x_t, t) -> eps, got {type(eps_model).__name__}"
        )

    def score(x: torch.Tensor, t) -> torch.Tensor:
        return eps_to_score(eps_model(x, int(t)), schedule.alpha_bar(int(t)))

    return score
