"""Noise schedules: betas -> alphas_cumprod (float64) and DDIM timestep subsequences.

Notation (DDPM, Ho et al. 2020; DDIM, Song et al. 2021):

    betas[t]           β_t,  t = 0 .. T-1
    alphas_cumprod[t]  ᾱ_t = Π_{s<=t} (1 - β_s)           (decreasing)
    x_t                = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε   (eq. 4 of DDPM)

The DDIM subsequence of timesteps follows diffusers' ``DDIMScheduler.set_timesteps`` exactly for
the spacings "leading", "trailing" and "linspace", ``steps_offset`` and ``set_alpha_to_one``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


class NoiseSchedule:
    """A discrete diffusion noise schedule and its DDIM timestep subsequences.

    Args:
        alphas_cumprod: ᾱ_t for t = 0..T-1, shape (T,), strictly in (0, 1], decreasing.
        betas: optional β_t, shape (T,); derived from ``alphas_cumprod`` when omitted.
        timestep_spacing: how ``ddim_timesteps`` spaces the steps: "leading" (default, DDIM
            paper and Stable Diffusion), "trailing" or "linspace" (as in diffusers).
        steps_offset: added to every timestep with "leading" spacing (Stable Diffusion uses 1).
        set_alpha_to_one: if True, the step after the last one uses ᾱ = 1 (a clean sample);
            otherwise ᾱ_0, as diffusers' ``DDIMScheduler``.

    Attributes:
        alphas_cumprod: float64 tensor of shape (T,).
        betas: float64 tensor of shape (T,).
        final_alpha_cumprod: ᾱ used after the last DDIM step (float).
    """

    def __init__(
        self,
        alphas_cumprod,
        *,
        betas=None,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
    ):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().clone()
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError(
                f"alphas_cumprod must be a 1-D sequence of at least 2 values, got shape {tuple(ac.shape)}"
            )
        if not torch.isfinite(ac).all() or (ac <= 0).any() or (ac > 1).any():
            raise ValueError("alphas_cumprod must hold finite values in (0, 1]")
        if (ac[1:] > ac[:-1]).any():
            raise ValueError("alphas_cumprod must be non-increasing in t")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}"
            )
        self.steps_offset = _check_positive_int("steps_offset", steps_offset, minimum=0)
        if not isinstance(set_alpha_to_one, bool):
            raise TypeError(f"set_alpha_to_one must be a bool, got {set_alpha_to_one!r}")
        self.alphas_cumprod = ac
        if betas is None:
            prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
            betas = 1.0 - ac / prev
        self.betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
        if self.betas.shape != ac.shape:
            raise ValueError(
                f"betas must have the shape of alphas_cumprod {tuple(ac.shape)}, got {tuple(self.betas.shape)}"
            )
        self.timestep_spacing = timestep_spacing
        self.set_alpha_to_one = set_alpha_to_one
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(ac[0])

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_betas(cls, betas, **kwargs) -> NoiseSchedule:
        """Schedule from β_t, shape (T,), each in (0, 1); ᾱ_t = cumprod(1 - β) in float64."""
        b = torch.as_tensor(betas, dtype=torch.float64)
        if b.ndim != 1 or b.numel() < 2:
            raise ValueError(
                f"betas must be 1-D with at least 2 values, got shape {tuple(b.shape)}"
            )
        if not torch.isfinite(b).all() or (b <= 0).any() or (b >= 1).any():
            raise ValueError("betas must hold finite values in the open interval (0, 1)")
        return cls(torch.cumprod(1.0 - b, dim=0), betas=b, **kwargs)

    @classmethod
    def linear(
        cls,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        **kwargs,
    ) -> NoiseSchedule:
        """DDPM's linear β schedule (Ho et al. 2020): β_t linear from beta_start to beta_end."""
        n = _check_positive_int("num_train_timesteps", num_train_timesteps, minimum=2)
        _check_betas(beta_start, beta_end)
        return cls.from_betas(
            torch.linspace(beta_start, beta_end, n, dtype=torch.float64), **kwargs
        )

    @classmethod
    def scaled_linear(
        cls,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        **kwargs,
    ) -> NoiseSchedule:
        """Stable Diffusion's schedule: sqrt(β_t) linear from sqrt(beta_start) to sqrt(beta_end)."""
        n = _check_positive_int("num_train_timesteps", num_train_timesteps, minimum=2)
        _check_betas(beta_start, beta_end)
        root = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64)
        return cls.from_betas(root**2, **kwargs)

    @classmethod
    def cosine(
        cls, num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999, **kwargs
    ) -> NoiseSchedule:
        """Cosine schedule (Nichol & Dhariwal 2021, eq. 17), diffusers' "squaredcos_cap_v2"."""
        n = _check_positive_int("num_train_timesteps", num_train_timesteps, minimum=2)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < math.inf:
            raise ValueError(f"s must be a finite number >= 0 (the offset, 0.008), got {s!r}")
        if isinstance(max_beta, bool) or not isinstance(max_beta, (int, float)):
            raise ValueError(f"max_beta must be a number in (0, 1), got {max_beta!r}")
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must be a number in (0, 1), got {max_beta!r}")

        def alpha_bar(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
        return cls.from_betas(torch.tensor(betas, dtype=torch.float64), **kwargs)

    @classmethod
    def from_diffusers(cls, scheduler) -> NoiseSchedule:
        """Schedule of a diffusers scheduler (e.g. ``DDIMScheduler``).

        Takes the scheduler's own ``alphas_cumprod`` (so DDIM steps match it bit for bit),
        its ``timestep_spacing``, ``steps_offset`` and ``set_alpha_to_one``.
        """
        if not hasattr(scheduler, "alphas_cumprod") or not hasattr(scheduler, "config"):
            raise TypeError(
                "scheduler must be a diffusers scheduler with `alphas_cumprod` and `config`, "
                f"got {type(scheduler).__name__}"
            )
        config = scheduler.config
        return cls(
            scheduler.alphas_cumprod.double(),
            betas=scheduler.betas.double() if hasattr(scheduler, "betas") else None,
            timestep_spacing=config.get("timestep_spacing", "leading"),
            steps_offset=config.get("steps_offset", 0),
            set_alpha_to_one=config.get("set_alpha_to_one", True),
        )

    # ----------------------------------------------------------------- queries
    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t for a train timestep t in [0, T-1]; t = -1 is the clean end (``final_alpha_cumprod``)."""
        t = int(t)
        if t < 0:
            return self.final_alpha_cumprod
        if t >= self.num_train_timesteps:
            raise ValueError(f"t must be in [-1, {self.num_train_timesteps - 1}], got {t}")
        return float(self.alphas_cumprod[t])

    def ddim_timesteps(self, num_steps: int) -> torch.Tensor:
        """Descending DDIM timesteps, shape (num_steps,), int64.

        Identical to diffusers' ``DDIMScheduler.set_timesteps(num_steps).timesteps`` for the same
        spacing, ``steps_offset`` and number of train timesteps.
        """
        T = self.num_train_timesteps
        n = _check_positive_int("num_steps", num_steps)
        if n > T:
            raise ValueError(
                f"num_steps must be between 1 and num_train_timesteps={T}, got {num_steps}"
            )
        if self.timestep_spacing == "linspace":
            ts = np.linspace(0, T - 1, n).round()[::-1].copy().astype(np.int64)
        elif self.timestep_spacing == "leading":
            ratio = T // n
            ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(np.int64)
            ts += self.steps_offset
        else:  # trailing
            ratio = T / n
            ts = np.round(np.arange(T, 0, -ratio)).astype(np.int64) - 1
        if ts.max() >= T:
            raise ValueError(
                f"steps_offset={self.steps_offset} pushes the first timestep to {int(ts.max())}, "
                f"past num_train_timesteps - 1 = {T - 1}"
            )
        return torch.from_numpy(ts)

    def timestep_pairs(self, num_steps: int) -> list[tuple[int, int]]:
        """[(t_cur, t_next), ...] for a DDIM run; the last t_next is -1 (the clean end)."""
        ts = [int(t) for t in self.ddim_timesteps(num_steps)]
        return list(zip(ts, ts[1:] + [-1]))

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.num_train_timesteps}, spacing={self.timestep_spacing!r}, "
            f"steps_offset={self.steps_offset}, set_alpha_to_one={self.set_alpha_to_one})"
        )


def dpm_solver_timesteps(schedule: NoiseSchedule, num_steps: int) -> torch.Tensor:
    """Descending timesteps, shape (num_steps,), as diffusers' DPMSolverMultistepScheduler
    with its default "linspace" spacing: n+1 rounded points from T-1 down to 0, the last dropped."""
    schedule = as_schedule(schedule)
    T = schedule.num_train_timesteps
    n = _check_positive_int("num_steps", num_steps)
    if n > T:
        raise ValueError(
            f"num_steps must be between 1 and num_train_timesteps={T}, got {num_steps}"
        )
    ts = np.linspace(0, T - 1, n + 1).round()[::-1][:-1].copy().astype(np.int64)
    return torch.from_numpy(ts)


def _check_betas(beta_start: float, beta_end: float) -> None:
    for name, v in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not isinstance(v, (int, float)) or not (0 < v < 1):
            raise ValueError(f"{name} must be a number in (0, 1), got {v!r}")
    if beta_end < beta_start:
        raise ValueError(f"beta_end ({beta_end}) must be >= beta_start ({beta_start})")


def as_schedule(schedule: NoiseSchedule | Sequence[float]) -> NoiseSchedule:
    """Accept a NoiseSchedule (returned as is); anything else is a TypeError."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(
            f"schedule must be a safescore.NoiseSchedule, got {type(schedule).__name__}; "
            "build one with NoiseSchedule.linear(), .scaled_linear(), .cosine() or .from_diffusers()"
        )
    return schedule
