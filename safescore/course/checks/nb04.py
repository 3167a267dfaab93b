"""Checks of notebook 04 CDTC."""

from __future__ import annotations

import math

import torch

from ...core import SafeGuidance, ddim_sample
from ...core.density import grad_log_prob
from .hints import as_tensor, call_student, close, compare, fail, ok, seeded
from .nb02 import bit_hint, ring_setup


def _safe_loop_variant(eps_model, schedule, x_T, n, density, gamma, threshold, variant):
    ts = schedule.ddim_timesteps(n).tolist()
    x = x_T
    for t, t_next in zip(ts, ts[1:] + [-1]):
        a, a_next = (torch.tensor(schedule.alpha_bar(s), dtype=x.dtype) for s in (t, t_next))
        eps = eps_model(x, t)
        x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
        mask = density.prob(x0) >= threshold
        if variant == "nomask":
            mask = torch.ones_like(mask)
        grad = grad_log_prob(density, x0)
        sign = 1.0 if variant == "sign" else -1.0
        x0c = torch.where(mask[:, None], x0 + sign * gamma * grad, x0)
        if variant == "recompute_eps":
            eps = (x - a**0.5 * x0c) / (1 - a) ** 0.5
        x = a_next**0.5 * x0c + (1 - a_next) ** 0.5 * eps
    return x


def check_safe_ddim_loop(fn) -> None:
    """``fn(eps_model, schedule, x_T, num_steps, density, gamma, threshold) -> x_0``, bit for bit."""
    problem, eps_model, schedule, x_T = ring_setup(n=256, seed=8)
    n, gamma, threshold = 20, problem.gamma, problem.threshold
    args = (eps_model, schedule, x_T, n, problem.density, gamma, threshold)
    ref = ddim_sample(*args[:4], guidance=SafeGuidance(problem.density, gamma, threshold)).samples
    out = as_tensor(call_student(fn, "safe_ddim", *args), ref, "safe_ddim")
    if torch.equal(out, ref):
        ok(
            f"safe_ddim equals ddim_sample(..., guidance=SafeGuidance(...)) bit for bit ({n} steps)."
        )
        return
    if close(out, ref, 1e-8, 1e-8):
        fail(bit_hint("safe_ddim", float((out - ref).abs().max())))
    plain = ddim_sample(*args[:4]).samples
    if close(out, plain, 1e-8, 1e-8):
        fail("your samples are plain DDIM: the correction x̂0 − γ∇log p_h(x̂0) never happened.")
    variants = [
        (
            "recomputing ε from the corrected x̂0: the DDIM update uses the corrected x̂0 with the "
            "ORIGINAL ε of the ε-model.",
            _safe_loop_variant(*args, "recompute_eps"),
        ),
        (
            "forgetting the per-sample mask: correct only the samples with p_h(x̂0) ≥ threshold.",
            _safe_loop_variant(*args, "nomask"),
        ),
        (
            "sign of γ: x̂0 − γ∇log p_h(x̂0), a step DOWN the harm log-density.",
            _safe_loop_variant(*args, "sign"),
        ),
    ]
    compare(
        out, ref, variants,
        "safe_ddim differs from the library: per step ε, Tweedie x̂0, p_h(x̂0), mask, x̂0 step, "
        "DDIM update with the original ε", "safe_ddim", rtol=1e-8, atol=1e-8,
    )  # fmt: skip


def _choose_reference(settings, harm, dist, max_harm):
    ok = [i for i in range(len(settings)) if harm[i] <= max_harm]
    if not ok:
        return None
    return settings[min(ok, key=lambda i: (dist[i], i))]


def check_choose_setting(fn) -> None:
    """``fn(settings, harm, dist, max_harm) -> setting or None``: the best setting meeting a target."""
    g = seeded(401)
    cases = []
    for _ in range(6):
        k = 8
        settings = [
            (round(float(x), 4), round(float(y), 2))
            for x, y in zip(torch.rand(k, generator=g), torch.rand(k, generator=g))
        ]
        harm = [round(float(v), 3) for v in 0.3 * torch.rand(k, generator=g)]
        dist = [round(float(v), 4) for v in torch.rand(k, generator=g)]
        cases.append((settings, harm, dist, sorted(harm)[3]))  # a target met exactly by one setting
    s0, h0, d0, _ = cases[0]
    cases.append((s0, h0, d0, min(h0) / 2))  # nothing meets the target
    for settings, harm, dist, target in cases:
        ref = _choose_reference(settings, harm, dist, target)
        out = call_student(fn, "choose_setting", list(settings), list(harm), list(dist), target)
        if out == ref:
            continue
        if ref is None:
            fail("when no setting meets the target, return None (don't pick one anyway).")
        if out is None:
            fail(
                "a setting with harm ≤ max_harm exists here: return the one with the smallest distance."
            )
        least_harm = settings[min(range(len(harm)), key=lambda i: harm[i])]
        least_dist = settings[min(range(len(dist)), key=lambda i: dist[i])]
        strict = [i for i in range(len(settings)) if harm[i] < target]
        if out == least_harm:
            fail(
                "you picked the least harmful setting: the target is a constraint (harm ≤ max_harm); "
                "among the settings that meet it, pick the one with the smallest distance."
            )
        if out == least_dist:
            fail(
                "the smallest distance overall may be too harmful: keep only the settings with harm ≤ max_harm first."
            )
        if strict and out == settings[min(strict, key=lambda i: dist[i])]:
            fail("a setting exactly at the target meets it: use harm ≤ max_harm, not <.")
        fail(
            f"choose_setting returned {out!r}, expected {ref!r}: the smallest distance among the settings with harm ≤ max_harm."
        )
    ok(
        "choose_setting picks the least-distorting setting meeting the harm target (and None when none does)."
    )


def check_harm_rate_ci(fn) -> None:
    """``fn(flags, n_boot, generator) -> (rate, lo, hi)``: harmful rate and its 95 % bootstrap CI."""
    g = seeded(402)
    for n, p in ((2000, 0.2), (500, 0.05)):
        flags = torch.rand(n, generator=g) < p
        res = call_student(fn, "harmful_rate_ci", flags, 2000, seeded(7))
        if not (isinstance(res, tuple) and len(res) == 3):
            fail("harmful_rate_ci must return a triple (rate, lo, hi) of numbers.")
        try:
            rate, lo, hi = (float(v) for v in res)
        except (TypeError, ValueError):
            fail("harmful_rate_ci must return three numbers (floats or 0-dim tensors).")
        true_rate = float(flags.double().mean())
        if abs(rate - true_rate) > 1e-12:
            fail("the harmful rate is the mean of the 0/1 flags: flags.double().mean().")
        if lo == 0.0 and hi == 1.0:
            fail("take the quantiles of the bootstrap MEANS, not of the 0/1 flags themselves.")
        if not lo <= rate <= hi:
            fail(
                "the interval (lo, hi) should contain the rate: lo is the 2.5 % quantile, hi the 97.5 %."
            )
        half = 1.96 * math.sqrt(true_rate * (1 - true_rate) / n)
        width = (hi - lo) / 2
        if width < 0.5 * half:
            fail(
                "the interval is too narrow: in each bootstrap draw resample N flags (the sample "
                "size, not n_boot) with replacement and take their mean; lo/hi are the 2.5 % and "
                "97.5 % quantiles of those n_boot means."
            )
        if width > 1.6 * half:
            fail(
                "the interval is too wide: a 95 % interval takes the 2.5 % and 97.5 % quantiles "
                "(q = 0.025, 0.975) of the bootstrap means."
            )
    ok("harmful_rate_ci gives the rate and a 95 % bootstrap interval of the right width.")
