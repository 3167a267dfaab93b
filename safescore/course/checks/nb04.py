"""Checks of notebook 04 CDTC."""

from __future__ import annotations

import math

import torch

from ...core import SafeGuidance, ddim_sample
from ...core.density import grad_log_prob
from .hints import F64, as_tensor, call_student, close, compare, fail, ok, seeded
from .nb02 import LOOP_TOL, ring_setup, same_samples


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
    """``fn(eps_model, schedule, x_T, num_steps, density, gamma, threshold) -> x_0``, to 1e-10."""
    problem, eps_model, schedule, x_T = ring_setup(n=256, seed=8)
    n, gamma, threshold = 20, problem.gamma, problem.threshold
    args = (eps_model, schedule, x_T, n, problem.density, gamma, threshold)
    ref = ddim_sample(*args[:4], guidance=SafeGuidance(problem.density, gamma, threshold)).samples
    raw = call_student(fn, "safe_ddim", *args)
    match = same_samples(raw, ref, "safe_ddim")
    if match:
        ok(f"safe_ddim equals ddim_sample(..., guidance=SafeGuidance(...)) {match} ({n} steps).")
        return
    out = as_tensor(raw, ref, "safe_ddim")
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
        "DDIM update with the original ε", "safe_ddim", rtol=LOOP_TOL, atol=LOOP_TOL,
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
    for settings, harm, dist, target in cases[1:4]:  # two settings tie for the smallest distance
        meeting = [i for i in range(len(settings)) if harm[i] < target]  # not at the target
        tied = list(dist)
        tied[meeting[0]] = tied[meeting[-1]] = round(min(dist) / 2, 4)
        cases.append((settings, harm, tied, target))
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
        meeting = [i for i in range(len(settings)) if harm[i] <= target]
        best = min(dist[i] for i in meeting)
        tied = [i for i in meeting if dist[i] == best]
        if len(tied) > 1 and out in [settings[i] for i in tied[1:]]:
            fail(
                "two settings tie for the smallest distance here: return the FIRST of them "
                "(min(..., key=...) does; a loop that updates on `<=` keeps the last)."
            )
        if strict and out == settings[min(strict, key=lambda i: dist[i])]:
            fail("a setting exactly at the target meets it: use harm ≤ max_harm, not <.")
        fail(
            f"choose_setting returned {out!r}, expected {ref!r}: the smallest distance among the settings with harm ≤ max_harm."
        )
    ok(
        "choose_setting picks the least-distorting setting meeting the harm target (and None when none does)."
    )


def _triple(res, name: str) -> tuple[float, float, float]:
    if not (isinstance(res, tuple) and len(res) == 3):
        fail(f"{name} must return a triple (rate, lo, hi) of numbers.")
    try:
        return tuple(float(v) for v in res)
    except (TypeError, ValueError):
        fail(f"{name} must return three numbers (floats, numpy or 0-dim tensors).")


def check_interval(
    name: str, res, rate: float, units: int, prescribed, same_draw_variants, reference, sd
) -> None:
    """The verdict on a percentile-bootstrap answer ``res`` = (rate, lo, hi).

    ``rate``: the true rate; ``units``: the number of flags (a rate is a multiple of 1/units, so
    float32 and float64 answers pass alike); ``prescribed``: (lo, hi) of the exercise's recipe
    with the same generator (an answer that follows it matches to float32 rounding);
    ``same_draw_variants``: (hint, a function returning (lo, hi)) of known mistakes with the same
    draws;
    ``reference``: the exact 95 % quantiles of the bootstrap distribution, ``sd`` its standard
    deviation: an answer that draws differently must land within its Monte-Carlo error of them.
    """
    got, lo, hi = _triple(res, name)
    if abs(got - 100 * rate) < 50 / units and abs(got - rate) >= 0.5 / units:
        fail("return fractions in [0, 1], not percentages.")
    if abs(got - rate) >= 0.5 / units:
        fail("the rate is the mean of all the 0/1 flags (e.g. flags.double().mean()).")
    if abs(lo - prescribed[0]) <= 1e-6 and abs(hi - prescribed[1]) <= 1e-6:
        return
    for hint, variant in same_draw_variants:
        v_lo, v_hi = variant()
        if abs(lo - v_lo) <= 1e-6 and abs(hi - v_hi) <= 1e-6:
            fail(hint)
    if not lo <= got <= hi:
        fail("the interval (lo, hi) should contain the rate: the 2.5 % and 97.5 % quantiles.")
    tol = 0.17 * sd + 1 / units  # the Monte-Carlo error of n_boot draws, and the 1/units grid
    if abs(lo - reference[0]) <= tol and abs(hi - reference[1]) <= tol:
        return
    kind = "narrow" if hi - lo < reference[1] - reference[0] else "wide"
    fail(
        f"the interval [{lo:.4f}, {hi:.4f}] is too {kind}: the 95 % percentile-bootstrap interval "
        f"here is about [{reference[0]:.4f}, {reference[1]:.4f}]. Take the 2.5 % and 97.5 % "
        "quantiles (q = 0.025, 0.975) of the n_boot resampled means."
    )


def bootstrap_means(x: torch.Tensor, n_boot: int, generator, draws: int | None = None):
    """Means of ``n_boot`` resamples (with replacement) of the rows of ``x`` (N, ...) -> (n_boot,)."""
    idx = torch.randint(0, len(x), (n_boot, draws or len(x)), generator=generator)
    return x[idx].reshape(n_boot, -1).mean(1)


def quantiles(means: torch.Tensor, lo: float, hi: float) -> tuple[float, float]:
    q = torch.quantile(means, torch.tensor([lo, hi], dtype=means.dtype))
    return float(q[0]), float(q[1])


def _binomial_quantiles(n: int, p: float, qs=(0.025, 0.975)) -> tuple[float, float]:
    """Quantiles of Binomial(n, p) / n: the exact bootstrap distribution of a mean of n flags."""
    k = torch.arange(n + 1, dtype=F64)
    log_pmf = (
        torch.lgamma(torch.tensor(n + 1.0, dtype=F64)) - torch.lgamma(k + 1)
        - torch.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    )  # fmt: skip
    cdf = torch.cumsum(log_pmf.exp(), 0)
    lo, hi = (int(torch.searchsorted(cdf, torch.tensor(q, dtype=F64))) / n for q in qs)
    return lo, hi


def check_harm_rate_ci(fn) -> None:
    """``fn(flags, n_boot, generator) -> (rate, lo, hi)``: harmful rate and its 95 % bootstrap CI.

    An answer that follows the exercise's recipe (``torch.randint`` indices from ``generator``,
    ``torch.quantile``) matches the reference to float32 rounding; one that draws differently
    (numpy, ``torch.multinomial``) must match the exact 95 % quantiles within its Monte-Carlo
    error (17 % of a standard deviation, plus 1/N), which a 90 % or 99 % interval does not.
    """
    g = seeded(402)
    n_boot = 3000
    for n, p in ((2500, 0.3), (2500, 0.1)):
        flags = torch.rand(n, generator=g) < p
        res = call_student(fn, "harmful_rate_ci", flags.clone(), n_boot, seeded(7))
        x = flags.double()
        rate = float(x.mean())
        means = bootstrap_means(x, n_boot, seeded(7))
        variants = [
            (
                "that is a 90 % interval (the 5 % and 95 % quantiles): a 95 % interval takes the "
                "2.5 % and 97.5 % quantiles.",
                lambda means=means: quantiles(means, 0.05, 0.95),
            ),
            (
                "that is a 99 % interval: a 95 % interval takes the 2.5 % and 97.5 % quantiles.",
                lambda means=means: quantiles(means, 0.005, 0.995),
            ),
            (
                "each bootstrap draw resamples N flags (the sample size), not n_boot: indices "
                "torch.randint(0, N, (n_boot, N), generator=generator).",
                lambda x=x: quantiles(bootstrap_means(x, n_boot, seeded(7), n_boot), 0.025, 0.975),
            ),
            (
                "take the quantiles of the bootstrap MEANS, not of the 0/1 flags themselves.",
                lambda x=x: quantiles(x, 0.025, 0.975),
            ),
        ]
        check_interval(
            "harmful_rate_ci", res, rate, n, quantiles(means, 0.025, 0.975), variants,
            _binomial_quantiles(n, rate), math.sqrt(rate * (1 - rate) / n),
        )  # fmt: skip
    ok("harmful_rate_ci gives the rate and its 95 % percentile-bootstrap interval.")
