"""DPM-Solver++(2M): a data-prediction multistep solver with the same guidance site as DDIM.

Fewer steps for the same quality (Lu et al. 2022, "DPM-Solver++", Algorithm 2, midpoint form).
Notation, with σ = sqrt((1-ᾱ)/ᾱ) the noise-to-signal ratio of a timestep:

    α_t = 1/sqrt(σ_t² + 1) (= sqrt(ᾱ_t)),   s_t = σ_t α_t (= sqrt(1-ᾱ_t)),   λ_t = log α_t - log s_t
    x̂0_i = (x_i - s_i ε_i) / α_i                                      (data prediction)
    h = λ_{i+1} - λ_i,   r = h_prev / h,   D = x̂0_i + (x̂0_i - x̂0_{i-1}) / (2r)
    x_{i+1} = (s_{i+1}/s_i) x_i - α_{i+1} (e^{-h} - 1) D               (first order: D = x̂0_i)

The x̂0 correction of :class:`safescore.SafeGuidance` is applied to x̂0_i before it enters the
history and, as in DDIM, with the ORIGINAL ε: the current point is moved to
α_i x̂0_corrected + s_i ε before the update (otherwise the data-prediction update, which
re-derives ε from x_i and x̂0, would largely undo the correction). Samples corrected at this
step or the previous one take the first-order update (no extrapolation through the jump). With ``guidance=None`` each step equals diffusers'
``DPMSolverMultistepScheduler`` (algorithm_type="dpmsolver++", solver_order=2, defaults).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from .sampling import GuidanceState, SampleResult, _check_finite, _Recorder, predict_x0
from .schedules import NoiseSchedule, _check_positive_int, as_schedule


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


def dpm_solver_sample(
    eps_model,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    num_steps: int,
    *,
    guidance=None,
    order: int = 2,
    record: bool = False,
    progress: bool = False,
    callback=None,
) -> SampleResult:
    """Sample with DPM-Solver++ (order 1 or 2), consulting ``guidance`` once per step at x̂0.

    Args and result as :func:`safescore.ddim_sample` (no η: the solver is deterministic).
    ``order``: 1 (= DDIM with η = 0) or 2 (2M). The first step (no history yet) and the last
    (σ = 0) are first order, as in diffusers.
    """
    schedule = as_schedule(schedule)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if not isinstance(x_T, torch.Tensor) or x_T.ndim < 1:
        raise TypeError("x_T must be a torch.Tensor of shape (B, ...)")
    ts = dpm_solver_timesteps(schedule, num_steps)
    n = len(ts)
    dtype = x_T.dtype
    ac = schedule.alphas_cumprod.to(dtype)
    sigmas = torch.cat([((1 - ac) / ac)[ts] ** 0.5, torch.zeros(1, dtype=dtype)])
    alphas = 1 / (sigmas**2 + 1) ** 0.5  # α_i = sqrt(ᾱ)
    stds = sigmas * alphas  # s_i = sqrt(1 - ᾱ)
    lambdas = torch.log(alphas) - torch.log(stds)  # λ_n = +inf at σ = 0
    differentiates = bool(getattr(guidance, "differentiates_denoiser", False))
    recorder = _Recorder(x_T, record, callback)
    x_cur, x0_prev, corrected_prev = x_T, None, None
    start = time.perf_counter()
    for i in tqdm(range(n), desc="DPM-Solver++", disable=not progress):
        t_cur = int(ts[i])
        t_next = int(ts[i + 1]) if i + 1 < n else -1
        # 1. Noise and data prediction (the ε-model builds no autograd graph here).
        eps = x0_hat = None
        if not differentiates:
            with torch.no_grad():
                eps = eps_model(x_cur, t_cur)
            _check_finite("the eps_model output", eps, i, t_cur)
            x0_hat = (x_cur - stds[i] * eps) / alphas[i]
        x0_plain = x0_hat
        # 2. >>> GUIDANCE SITE (as in ddim_sample) <<<
        harm = corrected = None
        if guidance is not None:
            a_t = float(alphas[i] ** 2)
            out = guidance(GuidanceState(x_cur, t_cur, t_next, i, n, a_t, eps, x0_hat, eps_model))
            x0_hat, harm, corrected = out.x0_hat, out.harm, out.corrected
            if x0_plain is None:
                x0_plain = (
                    out.x0_hat_unguided
                    if out.x0_hat_unguided is not None
                    else predict_x0(x_cur, out.eps, a_t)
                )
            _check_finite("the guided x0_hat", x0_hat, i, t_cur)
        # The update uses the ORIGINAL ε (as DDIM does): a corrected x̂0 moves the current point
        # to the one that the corrected x̂0 and the original ε describe,
        # x_i <- α_i x̂0_corrected + s_i ε = x_i + α_i (x̂0_corrected - x̂0).
        if corrected is not None and bool(corrected.any()):
            rows = corrected.view(-1, *([1] * (x_cur.ndim - 1))).to(x_cur.device)
            x_cur = torch.where(rows, x_cur + alphas[i] * (x0_hat - x0_plain), x_cur)
        # 3. Multistep update in λ (DPM-Solver++ eq. for order 1 / 2M midpoint).
        h = lambdas[i + 1] - lambdas[i]
        first = order == 1 or x0_prev is None or i == n - 1  # no history yet / σ_final = 0
        x_first = (stds[i + 1] / stds[i]) * x_cur - (alphas[i + 1] * (torch.exp(-h) - 1.0)) * x0_hat
        if first:
            x_next = x_first
        else:
            h_prev = lambdas[i] - lambdas[i - 1]
            r = h_prev / h
            d1 = (1.0 / r) * (x0_hat - x0_prev)
            x_next = (
                (stds[i + 1] / stds[i]) * x_cur
                - (alphas[i + 1] * (torch.exp(-h) - 1.0)) * x0_hat
                - 0.5 * (alphas[i + 1] * (torch.exp(-h) - 1.0)) * d1
            )
            # A correction is a jump in x̂0, not a smooth change: extrapolating through it
            # (D1) would undo it. Samples corrected now or at the previous step take the
            # first-order (DDIM) update; the others keep the 2M update bit for bit.
            jumped = corrected if corrected is not None else None
            if jumped is not None and corrected_prev is not None:
                jumped = jumped | corrected_prev
            if jumped is not None and bool(jumped.any()):
                rows = jumped.view(-1, *([1] * (x_cur.ndim - 1))).to(x_cur.device)
                x_next = torch.where(rows, x_first, x_next)
        recorder.step(i, t_cur, t_next, x_cur, x_next, x0_plain, x0_hat, harm, corrected)
        x_cur, x0_prev, corrected_prev = x_next, x0_hat, corrected
    return recorder.result(x_cur, ts, start)
