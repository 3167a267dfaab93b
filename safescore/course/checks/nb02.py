"""Checks of notebook 02 DDPM / DDIM."""

from __future__ import annotations

import math

import torch

from ...core import ddim_sample, ddim_step, predict_x0
from ...toy.problems import ring_problem
from .hints import F64, as_tensor, call_student, close, compare, fail, ok, seeded


def check_tweedie(fn) -> None:
    """``fn(x_t, eps, alpha_bar) -> x0_hat``: Tweedie's clean-point prediction."""
    g = seeded(201)
    for a in (0.9, 0.37, 0.02):
        x_t = torch.randn(32, 2, generator=g, dtype=F64)
        eps = torch.randn(32, 2, generator=g, dtype=F64)
        ref = predict_x0(x_t, eps, a)
        out = as_tensor(call_student(fn, "tweedie_x0", x_t, eps, a), ref, "tweedie_x0")
        sa, sb = math.sqrt(a), math.sqrt(1 - a)
        variants = [
            ("√ᾱ vs ᾱ: divide by √ᾱ_t, not by ᾱ_t.", (x_t - sb * eps) / a),
            ("√ᾱ vs ᾱ: the noise coefficient is √(1−ᾱ_t), not 1−ᾱ_t.", (x_t - (1 - a) * eps) / sa),
            ("√ᾱ vs ᾱ: both coefficients are square roots.", (x_t - (1 - a) * eps) / a),
            ("the sign: subtract the noise, x̂0 = (x_t − √(1−ᾱ) ε)/√ᾱ.", (x_t + sb * eps) / sa),
            ("divide by √ᾱ_t, don't multiply.", (x_t - sb * eps) * sa),
            ("don't forget to divide by √ᾱ_t.", x_t - sb * eps),
        ]
        compare(out, ref, variants, "tweedie_x0 should return (x_t − √(1−ᾱ) ε)/√ᾱ", "tweedie_x0")
    ok("tweedie_x0 equals safescore.predict_x0 at ᾱ = 0.9, 0.37, 0.02.")


def check_ddim_step(fn) -> None:
    """``fn(x0_hat, eps, alpha_bar_t, alpha_bar_prev, eta, z) -> x_prev``: DDIM eq. 12 with noise η_DDIM (``eta``)."""
    g = seeded(202)
    for a, a_prev, eta in ((0.3, 0.5, 0.0), (0.3, 0.5, 1.0), (0.05, 0.4, 0.5)):
        x0 = torch.randn(32, 2, generator=g, dtype=F64)
        eps = torch.randn(32, 2, generator=g, dtype=F64)
        z = torch.randn(32, 2, generator=g, dtype=F64)
        ref = ddim_step(x0, eps, a, a_prev, eta=eta, x0_hat=x0, noise=z).prev_sample
        out = as_tensor(
            call_student(fn, "ddim_update", x0, eps, a, a_prev, eta, z), ref, "ddim_update"
        )
        var = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        sigma = eta * math.sqrt(var)

        def upd(c0, cd, cz, x0=x0, eps=eps, z=z):
            return c0 * x0 + cd * eps + cz * z

        sp = math.sqrt(a_prev)
        variants = [
            (
                "√ᾱ vs ᾱ: the clean point enters as √ᾱ_prev x̂0.",
                upd(a_prev, math.sqrt(1 - a_prev - sigma**2), sigma),
            ),
            (
                "the direction coefficient is √(1−ᾱ_prev−σ_t²): the injected noise takes part of "
                "the variance.",
                upd(sp, math.sqrt(1 - a_prev), sigma),
            ),
            ("add σ_t z, not σ_t² z.", upd(sp, math.sqrt(1 - a_prev - sigma**2), sigma**2)),
            (
                "don't forget the noise term σ_t z (it matters for η_DDIM > 0).",
                upd(sp, math.sqrt(1 - a_prev - sigma**2), 0.0),
            ),
            (
                "σ_t = η_DDIM √((1−ᾱ_prev)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_prev): you left out a square root.",
                upd(sp, math.sqrt(max(1 - a_prev - (eta * var) ** 2, 0.0)), eta * var),
            ),
        ]
        compare(
            out,
            ref,
            variants,
            "ddim_update should return √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ_t²) ε + σ_t z",
            "ddim_update",
        )
    ok("ddim_update equals safescore.ddim_step for η_DDIM = 0, 0.5 and 1.")


def ring_setup(n=256, seed=7):
    problem = ring_problem()
    x_T = problem.noise(n, seeded(seed))
    return problem, problem.eps_model(), problem.schedule, x_T


# A sampler written differently from the library (math.sqrt, predict_x0, x/√ᾱ − √((1−ᾱ)/ᾱ) ε)
# rounds differently: over 20 float64 steps that is ~1e-14, far below any mistake's effect.
LOOP_TOL = 1e-10


def same_samples(out, ref: torch.Tensor, name: str) -> str | None:
    """ "bit for bit" or "to 1e-xx" when the sampler ``out`` matches ``ref`` in float64, a hint for
    a float32 computation, None otherwise (then the caller looks for the mistake)."""
    if isinstance(out, torch.Tensor) and out.dtype != ref.dtype and out.shape == ref.shape:
        fail(
            f"`{name}` returns {out.dtype}: keep x_T's float64 throughout (the scaffold's `a`, "
            "`a_next` are float64 tensors; math.sqrt of a float works too)."
        )
    out = as_tensor(out, ref, name)
    if torch.equal(out, ref):
        return "bit for bit"
    if close(out, ref, LOOP_TOL, LOOP_TOL):
        return f"to {float((out - ref).abs().max()):.0e} (float64 rounding)"
    return None


def check_ddim_loop(fn) -> None:
    """``fn(eps_model, schedule, x_T, num_steps) -> x_0``: plain deterministic DDIM, to 1e-10."""
    problem, eps_model, schedule, x_T = ring_setup()
    n = 20
    ref = ddim_sample(eps_model, schedule, x_T, n, record=True)
    raw = call_student(fn, "my_ddim", eps_model, schedule, x_T, n)
    match = same_samples(raw, ref.samples, "my_ddim")
    if match:
        ok(f"my_ddim equals safescore.ddim_sample {match} ({n} steps, {len(x_T)} samples).")
        return
    out = as_tensor(raw, ref.samples, "my_ddim")
    if close(out, ref.trajectory[-2], 1e-8, 1e-8):
        fail(
            "you stopped one step early: the last step goes from ts[-1] to the clean end, "
            "t_next = -1, whose ᾱ is schedule.alpha_bar(-1)."
        )
    if close(out, ref.x0_hats[-1], 1e-8, 1e-8):
        fail("return the final x, not the last x̂0.")
    if close(out, x_T, 0, 0):
        fail("`my_ddim` returned x_T: update x at every step (x = √ᾱ_next x̂0 + √(1−ᾱ_next) ε).")
    fail(
        "my_ddim differs from ddim_sample: per step, ε = eps_model(x, t), x̂0 = (x − √(1−ᾱ_t) ε)/√ᾱ_t, "
        "x = √ᾱ_next x̂0 + √(1−ᾱ_next) ε, over the timesteps schedule.ddim_timesteps(num_steps) "
        f"(largest difference {float((out - ref.samples).abs().max()):.3g})."
    )
