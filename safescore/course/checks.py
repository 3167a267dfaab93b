"""Automatic checks for the notebooks' exercises.

Every ``check_*(fn)`` calls the student's ``fn`` on random inputs (float64, seeded) and compares
the result with a reference: the library (``safescore.predict_x0``, ``ddim_sample``,
``SafeGuidance``, ...) or a closed form. On a wrong answer it raises an ``AssertionError`` whose
message starts with ``Hint:`` and names the likely mistake, found by comparing the answer with
known-wrong variants (a flipped sign of γ, ᾱ instead of √ᾱ, a forgotten per-sample mask, ε
recomputed from the corrected x̂0, a missing ``detach``...). A stub that still raises
``NotImplementedError`` fails with a hint too. On success it prints one line starting with ``✓``.

The checks are cheap (well under a second each) and self-contained: they build their own
inputs, so an exercise can be checked without running the rest of its notebook.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..core import NegativeGuidance, SafeGuidance, ddim_sample, ddim_step, predict_x0
from ..core.density import grad_log_prob
from ..core.protocol import GuidanceState
from ..toy.gmm import GaussianMixture
from ..toy.metrics import off_manifold_distance
from ..toy.problems import linear_manifold_problem, ring_problem

F64 = torch.float64

__all__ = [
    "check_gmm_score",
    "check_dsm_loss",
    "check_langevin_step",
    "check_tweedie",
    "check_ddim_step",
    "check_ddim_loop",
    "check_classifier_guided_eps",
    "check_negative_guidance_eps",
    "check_cdtc_step",
    "check_safe_ddim_loop",
    "check_choose_setting",
    "check_harm_rate_ci",
    "check_off_manifold_distance",
    "check_latent_cdtc_step",
    "check_log_odds",
    "check_clip_cosine",
    "check_topk_log_prob",
    "check_info_nce",
    "check_cfg_eps",
    "check_latent_x0_step",
    "check_i2p_inappropriate",
    "check_prompt_bootstrap_ci",
]


# --------------------------------------------------------------------------- helpers
def _fail(message: str):
    raise AssertionError("Hint: " + message)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _call(fn: Callable, name: str, *args, **kwargs):
    """Call the student's function; a stub or a crash becomes a hint."""
    if not callable(fn):
        _fail(f"`{name}` must be a function, got {type(fn).__name__}.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        _fail(
            f"`{name}` is not implemented yet: replace the `raise NotImplementedError()` line in "
            "the exercise cell above with your code, run that cell, then this one."
        )
    except AssertionError:
        raise
    except Exception as err:  # noqa: BLE001 - any crash of student code is reported as a hint
        _fail(
            f"`{name}` raised {type(err).__name__}: {err}. Check the shapes in the docstring "
            "(x of shape (B, d), one value per sample where it says (B,))."
        )


def _tensor(out, like: torch.Tensor, name: str, what: str = "its result") -> torch.Tensor:
    """The student's output as a tensor of ``like``'s shape, with graph and type problems hinted."""
    if out is None:
        _fail(f"`{name}` returned None: did you forget the `return` statement?")
    if not isinstance(out, torch.Tensor):
        _fail(f"`{name}` must return a torch.Tensor for {what}, got {type(out).__name__}.")
    if out.requires_grad:
        _fail(
            f"{what} of `{name}` still carries an autograd graph (requires_grad=True): a missing "
            "`.detach()` — return plain values, not the graph used for the gradient."
        )
    if tuple(out.shape) != tuple(like.shape):
        _fail(
            f"{what} of `{name}` has shape {tuple(out.shape)}, expected {tuple(like.shape)} "
            "(one row per sample)."
        )
    return out.to(like.dtype)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9, atol: float = 1e-9) -> bool:
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))


def _compare(out, ref, variants, generic: str, name: str, rtol=1e-9, atol=1e-9) -> None:
    """Pass if ``out`` matches ``ref``; else the hint of the first wrong variant it matches."""
    if _close(out, ref, rtol, atol):
        return
    for hint, value in variants:
        if value is not None and value.shape == out.shape and _close(out, value, rtol, atol):
            _fail(hint)
    err = float((out - ref).abs().max())
    _fail(f"{generic} (largest difference from the reference: {err:.3g}).")


def _ok(message: str) -> None:
    print("✓ " + message)


# --------------------------------------------------------------------------- 01 score matching
def _random_mixture(g, K=4, d=2):
    means = 2 * torch.randn(K, d, generator=g, dtype=F64)
    variances = 0.2 + torch.rand(K, generator=g, dtype=F64)  # different on purpose
    weights = torch.rand(K, generator=g, dtype=F64) + 0.2
    return means, variances, weights / weights.sum()


def check_gmm_score(fn) -> None:
    """``fn(x, means, variances, weights) -> (B, d)``: the exact score of an isotropic mixture."""
    g = _gen(101)
    for _ in range(3):
        means, variances, weights = _random_mixture(g)
        x = 2.5 * torch.randn(64, 2, generator=g, dtype=F64)
        ref = GaussianMixture(means, variances, weights).score(x)
        out = _tensor(_call(fn, "gmm_score", x, means, variances, weights), ref, "gmm_score")
        diff = x[:, None, :] - means[None]  # (B, K, d)
        sq = (diff**2).sum(-1)  # (B, K)
        d = x.shape[1]
        logn = -0.5 * sq / variances - 0.5 * d * torch.log(2 * math.pi * variances)
        r = torch.softmax(torch.log(weights) + logn, -1)
        r_no_w = torch.softmax(logn, -1)
        r_no_const = torch.softmax(torch.log(weights) - 0.5 * sq / variances, -1)
        dens = (weights * logn.exp()).sum(-1, keepdim=True)

        def score_with(resp, scale=variances, diff=diff):
            return -(resp[..., None] * diff / scale[None, :, None]).sum(1)

        variants = [
            (
                "the sign: the score points TOWARD the modes, ∇log p = −Σ_k r_k (x − μ_k)/σ_k².",
                -ref,
            ),
            (
                "you computed ∇p(x), not ∇log p(x): divide by p(x), i.e. weight by the "
                "responsibilities r_k = w_k N_k(x) / Σ_j w_j N_j(x) (a softmax of the log terms).",
                score_with(r) * dens,
            ),
            (
                "divide by the variance σ_k², not by the standard deviation σ_k.",
                score_with(r, variances.sqrt()),
            ),
            (
                "the responsibilities include the weights: r_k ∝ w_k N(x; μ_k, σ_k² I).",
                score_with(r_no_w),
            ),
            (
                "N(x; μ_k, σ_k² I) includes the factor (2πσ_k²)^(−d/2); it differs between "
                "components with different variances, so it changes the responsibilities.",
                score_with(r_no_const),
            ),
        ]
        _compare(
            out,
            ref,
            variants,
            "gmm_score should return −Σ_k r_k(x) (x − μ_k)/σ_k² with r_k the responsibilities",
            "gmm_score",
        )
    _ok("gmm_score equals GaussianMixture.score on 3 random mixtures.")


class _TinyEps(torch.nn.Module):
    """A small differentiable ε-model (x (B, d), t (B,)) -> (B, d) for the DSM check."""

    def __init__(self, d: int, g: torch.Generator):
        super().__init__()
        self.w = torch.nn.Parameter(0.5 * torch.randn(d, d, generator=g, dtype=F64))
        self.b = torch.nn.Parameter(0.1 * torch.randn(d, generator=g, dtype=F64))

    def forward(self, x, t):
        return torch.tanh(x @ self.w + self.b + t.to(F64)[:, None] / 1000)


def check_dsm_loss(fn) -> None:
    """``fn(model, x0, t, eps, alpha_bar) -> scalar``: the ε-form denoising score matching loss."""
    g = _gen(102)
    B, d = 128, 3
    model = _TinyEps(d, g)
    x0 = torch.randn(B, d, generator=g, dtype=F64)
    t = torch.randint(0, 1000, (B,), generator=g)
    eps = torch.randn(B, d, generator=g, dtype=F64)
    a = 0.02 + 0.96 * torch.rand(B, generator=g, dtype=F64)
    out = _call(fn, "dsm_loss", model, x0, t, eps, a)
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        _fail(
            "dsm_loss must return a single number (a 0-dim tensor): average the squared errors "
            "with `.mean()`."
        )
    if not out.requires_grad:
        _fail(
            "the loss carries no gradient: don't wrap it in torch.no_grad() or call .detach() — "
            "the optimiser needs to differentiate it with respect to the model's parameters."
        )
    out = out.detach().reshape(())
    sa, sb = a.sqrt()[:, None], (1 - a).sqrt()[:, None]
    with torch.no_grad():

        def loss(x_t, target=eps, red="mean"):
            e = (model(x_t, t) - target) ** 2
            return e.mean() if red == "mean" else (e.sum() if red == "sum" else e.sum(-1).mean())

        ref = loss(sa * x0 + sb * eps)
        variants = [
            (
                "√ᾱ vs ᾱ: the noised point is x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε (coefficients whose "
                "squares sum to 1).",
                loss(a[:, None] * x0 + (1 - a)[:, None] * eps),
            ),
            (
                "the network predicts the noise ε: compare ε_θ(x_t, t) with ε, not with x0.",
                loss(sa * x0 + sb * eps, target=x0),
            ),
            (
                "average over the batch AND the coordinates (`.mean()`), not a sum.",
                loss(sa * x0 + sb * eps, red="sum"),
            ),
            (
                "you summed over the coordinates: average over the batch and the coordinates "
                "(`.mean()`), as train_dsm does.",
                loss(sa * x0 + sb * eps, red="dim"),
            ),
            (
                "noise x0 with ε, not ε with x0: x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε.",
                loss(sa * eps + sb * x0),
            ),
        ]
    _compare(
        out.reshape(1),
        ref.reshape(1),
        [(h, v.reshape(1)) for h, v in variants],
        "dsm_loss should be mean((ε_θ(√ᾱ x0 + √(1−ᾱ) ε, t) − ε)²)",
        "dsm_loss",
    )
    _ok("dsm_loss equals mean((ε_θ(√ᾱ x0 + √(1−ᾱ) ε, t) − ε)²) and is differentiable.")


def check_langevin_step(fn) -> None:
    """``fn(x, score, step_size, z) -> x_next``: one unadjusted Langevin step."""
    g = _gen(103)
    x = torch.randn(50, 2, generator=g, dtype=F64)
    score = torch.randn(50, 2, generator=g, dtype=F64)
    z = torch.randn(50, 2, generator=g, dtype=F64)
    for alpha in (0.01, 0.3):
        ref = x + alpha * score + math.sqrt(2 * alpha) * z
        out = _tensor(_call(fn, "langevin_step", x, score, alpha, z), ref, "langevin_step")
        variants = [
            ("the noise term is √(2α) z, not √α z.", x + alpha * score + math.sqrt(alpha) * z),
            ("the noise term is √(2α) z, not α z.", x + alpha * score + alpha * z),
            (
                "the sign: Langevin moves UP the log-density, x + α ∇log p(x).",
                x - alpha * score + math.sqrt(2 * alpha) * z,
            ),
            (
                "don't forget the noise √(2α) z: without it this is gradient ascent.",
                x + alpha * score,
            ),
        ]
        _compare(
            out, ref, variants, "langevin_step should return x + α·score + √(2α)·z", "langevin_step"
        )
    _ok("langevin_step equals x + α ∇log p(x) + √(2α) z.")


# --------------------------------------------------------------------------- 02 DDPM / DDIM
def check_tweedie(fn) -> None:
    """``fn(x_t, eps, alpha_bar) -> x0_hat``: Tweedie's clean-point prediction."""
    g = _gen(201)
    for a in (0.9, 0.37, 0.02):
        x_t = torch.randn(32, 2, generator=g, dtype=F64)
        eps = torch.randn(32, 2, generator=g, dtype=F64)
        ref = predict_x0(x_t, eps, a)
        out = _tensor(_call(fn, "tweedie_x0", x_t, eps, a), ref, "tweedie_x0")
        sa, sb = math.sqrt(a), math.sqrt(1 - a)
        variants = [
            ("√ᾱ vs ᾱ: divide by √ᾱ_t, not by ᾱ_t.", (x_t - sb * eps) / a),
            ("√ᾱ vs ᾱ: the noise coefficient is √(1−ᾱ_t), not 1−ᾱ_t.", (x_t - (1 - a) * eps) / sa),
            ("√ᾱ vs ᾱ: both coefficients are square roots.", (x_t - (1 - a) * eps) / a),
            ("the sign: subtract the noise, x̂0 = (x_t − √(1−ᾱ) ε)/√ᾱ.", (x_t + sb * eps) / sa),
            ("divide by √ᾱ_t, don't multiply.", (x_t - sb * eps) * sa),
            ("don't forget to divide by √ᾱ_t.", x_t - sb * eps),
        ]
        _compare(out, ref, variants, "tweedie_x0 should return (x_t − √(1−ᾱ) ε)/√ᾱ", "tweedie_x0")
    _ok("tweedie_x0 equals safescore.predict_x0 at ᾱ = 0.9, 0.37, 0.02.")


def check_ddim_step(fn) -> None:
    """``fn(x0_hat, eps, alpha_bar_t, alpha_bar_prev, eta, z) -> x_prev``: DDIM eq. 12 with η."""
    g = _gen(202)
    for a, a_prev, eta in ((0.3, 0.5, 0.0), (0.3, 0.5, 1.0), (0.05, 0.4, 0.5)):
        x0 = torch.randn(32, 2, generator=g, dtype=F64)
        eps = torch.randn(32, 2, generator=g, dtype=F64)
        z = torch.randn(32, 2, generator=g, dtype=F64)
        ref = ddim_step(x0, eps, a, a_prev, eta=eta, x0_hat=x0, noise=z).prev_sample
        out = _tensor(_call(fn, "ddim_update", x0, eps, a, a_prev, eta, z), ref, "ddim_update")
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
                "don't forget the noise term σ_t z (it matters for η > 0).",
                upd(sp, math.sqrt(1 - a_prev - sigma**2), 0.0),
            ),
            (
                "σ_t = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_prev): you left out a square root.",
                upd(sp, math.sqrt(max(1 - a_prev - (eta * var) ** 2, 0.0)), eta * var),
            ),
        ]
        _compare(
            out,
            ref,
            variants,
            "ddim_update should return √ᾱ_prev x̂0 + √(1−ᾱ_prev−σ_t²) ε + σ_t z",
            "ddim_update",
        )
    _ok("ddim_update equals safescore.ddim_step for η = 0, 0.5 and 1.")


def _ring_setup(n=256, seed=7):
    problem = ring_problem()
    x_T = problem.noise(n, _gen(seed))
    return problem, problem.eps_model(), problem.schedule, x_T


def _bit_hint(name: str, err: float) -> str:
    return (
        f"`{name}` is within {err:.2g} of the library but not bit for bit. Use the 0-dim float64 "
        "tensors `a`, `a_next` of the scaffold and write the updates in the order of the formulas: "
        "x̂0 = (x − (1 − a)**0.5 * ε) / a**0.5, then x = a_next**0.5 * x̂0 + (1 − a_next)**0.5 * ε."
    )


def check_ddim_loop(fn) -> None:
    """``fn(eps_model, schedule, x_T, num_steps) -> x_0``: plain deterministic DDIM, bit for bit."""
    problem, eps_model, schedule, x_T = _ring_setup()
    n = 20
    ref = ddim_sample(eps_model, schedule, x_T, n, record=True)
    out = _tensor(_call(fn, "my_ddim", eps_model, schedule, x_T, n), ref.samples, "my_ddim")
    if torch.equal(out, ref.samples):
        _ok(f"my_ddim equals safescore.ddim_sample bit for bit ({n} steps, {len(x_T)} samples).")
        return
    if _close(out, ref.samples, 1e-8, 1e-8):
        _fail(_bit_hint("my_ddim", float((out - ref.samples).abs().max())))
    if _close(out, ref.trajectory[-2], 1e-8, 1e-8):
        _fail(
            "you stopped one step early: the last step goes from ts[-1] to the clean end, "
            "t_next = -1, whose ᾱ is schedule.alpha_bar(-1)."
        )
    if _close(out, ref.x0_hats[-1], 1e-8, 1e-8):
        _fail("return the final x, not the last x̂0.")
    if _close(out, x_T, 0, 0):
        _fail("`my_ddim` returned x_T: update x at every step (x = √ᾱ_next x̂0 + √(1−ᾱ_next) ε).")
    _fail(
        "my_ddim differs from ddim_sample: per step, ε = eps_model(x, t), x̂0 = (x − √(1−ᾱ_t) ε)/√ᾱ_t, "
        "x = √ᾱ_next x̂0 + √(1−ᾱ_next) ε, over the timesteps schedule.ddim_timesteps(num_steps) "
        f"(largest difference {float((out - ref.samples).abs().max()):.3g})."
    )


# --------------------------------------------------------------------------- 03 guidance
def check_classifier_guided_eps(fn) -> None:
    """``fn(eps, grad_log_p_y, alpha_bar, scale) -> eps_guided``: classifier guidance's ε shift."""
    g = _gen(301)
    for a, s in ((0.3, 1.0), (0.8, 4.0)):
        eps = torch.randn(40, 2, generator=g, dtype=F64)
        grad = torch.randn(40, 2, generator=g, dtype=F64)
        c = math.sqrt(1 - a)
        ref = eps - s * c * grad
        out = _tensor(
            _call(fn, "classifier_guided_eps", eps, grad, a, s), ref, "classifier_guided_eps"
        )
        variants = [
            (
                "the sign: guidance TOWARD y adds s∇log p(y|x_t) to the score, and ε = −√(1−ᾱ)·score, "
                "so ε loses s√(1−ᾱ_t)∇log p(y|x_t).",
                eps + s * c * grad,
            ),
            (
                "the factor is √(1−ᾱ_t) (the one between ε and the score), not √ᾱ_t.",
                eps - s * math.sqrt(a) * grad,
            ),
            ("√ᾱ vs ᾱ: the factor is √(1−ᾱ_t), not 1−ᾱ_t.", eps - s * (1 - a) * grad),
            ("multiply by √(1−ᾱ_t), don't divide: ε = −√(1−ᾱ)·score.", eps - s / c * grad),
            ("don't forget the guidance scale s.", eps - c * grad),
        ]
        _compare(
            out,
            ref,
            variants,
            "classifier_guided_eps should return ε − s√(1−ᾱ_t)∇log p(y|x_t)",
            "classifier_guided_eps",
        )
    _ok("classifier_guided_eps equals ε − s√(1−ᾱ_t)∇log p(y|x_t).")


def check_negative_guidance_eps(fn) -> None:
    """``fn(eps_model, x_t, t, alpha_bar, density, gamma) -> eps``: negative guidance in x_t space."""
    problem, eps_model, schedule, _ = _ring_setup()
    g = _gen(302)
    t, gamma = 500, 0.03
    a = schedule.alpha_bar(t)
    x_t = problem.mixture.noised(a).sample(64, g)
    state = GuidanceState(
        x_t=x_t, t=t, t_next=t - 20, step_index=0, num_steps=1, alpha_bar_t=a,
        eps=None, x0_hat=None, eps_model=eps_model,
    )  # fmt: skip
    ref = NegativeGuidance(problem.density, gamma)(state).eps
    out = _tensor(
        _call(fn, "negative_guided_eps", eps_model, x_t, t, a, problem.density, gamma),
        ref,
        "negative_guided_eps",
        "the guided ε",
    )
    eps = eps_model(x_t, t)
    x0 = predict_x0(x_t, eps, a)
    grad_x0 = grad_log_prob(problem.density, x0)
    c = math.sqrt(1 - a)
    grad_xt = (ref - eps) / (gamma * c)
    variants = [
        (
            "you differentiated with respect to x̂0: negative guidance differentiates "
            "log p_h(x̂0(x_t)) with respect to x_t, THROUGH the ε-model. Make a leaf "
            "x = x_t.detach().requires_grad_(True), compute ε = eps_model(x, t) and x̂0 from it, "
            "then torch.autograd.grad(log_prob(x̂0).sum(), x).",
            eps + gamma * c * grad_x0,
        ),
        (
            "the sign: steering AWAY from harm shifts the score by −γ∇log p_h, so ε gains "
            "+γ√(1−ᾱ_t)∇_{x_t} log p_h.",
            eps - gamma * c * grad_xt,
        ),
        ("the factor is √(1−ᾱ_t), not √ᾱ_t.", eps + gamma * math.sqrt(a) * grad_xt),
        ("√ᾱ vs ᾱ: the factor is √(1−ᾱ_t), not 1−ᾱ_t.", eps + gamma * (1 - a) * grad_xt),
        ("your ε is unguided: add γ√(1−ᾱ_t)∇_{x_t} log p_h(x̂0(x_t)).", eps),
    ]
    _compare(
        out, ref, variants, "negative_guided_eps should return ε + γ√(1−ᾱ_t)∇_{x_t} log p_h(x̂0(x_t))",
        "negative_guided_eps", rtol=1e-7, atol=1e-9,
    )  # fmt: skip
    _ok("negative_guided_eps equals safescore.NegativeGuidance's ε.")


def _ring_x0(problem, n, g):
    """x̂0-like points: half near the harmful modes, half anywhere near the ring."""
    x = problem.mixture.sample(n, g)
    return x + 0.3 * torch.randn(x.shape, generator=g, dtype=F64)


def check_cdtc_step(fn) -> None:
    """``fn(x0_hat, density, gamma, threshold) -> (x0_new, mask)``: the CDTC-gated x̂0 step."""
    problem = ring_problem()
    density, g = problem.density, _gen(303)
    gamma, threshold = 0.01, 0.5
    x0 = _ring_x0(problem, 200, g)
    ref = SafeGuidance(density, gamma, threshold).correct(x0)
    res = _call(fn, "cdtc_step", x0, density, gamma, threshold)
    if not (isinstance(res, tuple) and len(res) == 2):
        _fail("cdtc_step must return a pair (x0_new, mask).")
    out = _tensor(res[0], x0, "cdtc_step", "x0_new")
    mask = res[1]
    if not isinstance(mask, torch.Tensor) or mask.shape != ref.corrected.shape:
        _fail(f"the mask must be a bool tensor of shape ({len(x0)},): one decision per sample.")
    mask = mask.bool()
    harm = density.prob(x0)
    if not torch.equal(mask, ref.corrected):
        if torch.equal(mask, harm < threshold):
            _fail("the mask is reversed: correct the samples with p_h(x̂0) ≥ threshold.")
        if torch.equal(mask, density.log_prob(x0) >= threshold):
            _fail(
                "compare density.prob(x̂0) (a probability in [0, 1]) with the threshold, not log_prob."
            )
        _fail("the mask should be density.prob(x0_hat) >= threshold, one entry per sample.")
    keep = ~ref.corrected
    grad = grad_log_prob(density, x0)
    grad_p = grad_log_prob(_ProbAsLog(density), x0)
    m = ref.corrected[:, None]
    variants = [
        (
            "sign of γ: step DOWN the harm log-density, x̂0 − γ∇log p_h(x̂0).",
            torch.where(m, x0 + gamma * grad, x0),
        ),
        (
            "forgetting the per-sample mask: only the samples with p_h(x̂0) ≥ threshold are "
            "corrected; the others must be returned unchanged (torch.where(mask[:, None], ...)).",
            x0 - gamma * grad,
        ),
        ("differentiate log_prob (log p_h), not prob.", torch.where(m, x0 - gamma * grad_p, x0)),
        ("the corrected rows are unchanged: apply x̂0 − γ∇log p_h(x̂0) where the mask is True.", x0),
    ]
    if not torch.equal(out[keep], x0[keep]) and not _close(out, x0 - gamma * grad):
        _fail(
            "samples below the threshold must be returned bit for bit unchanged: CDTC leaves "
            "them alone."
        )
    _compare(
        out,
        ref.x0_hat,
        variants,
        "cdtc_step should return x̂0 − γ∇log p_h(x̂0) where p_h ≥ threshold",
        "cdtc_step",
    )
    _ok(
        f"cdtc_step equals SafeGuidance.correct ({int(ref.corrected.sum())} of {len(x0)} corrected)."
    )


class _ProbAsLog:
    """A density whose 'log_prob' is its prob: the known-wrong variant 'differentiate prob'."""

    def __init__(self, density):
        self.density = density

    def log_prob(self, x):
        return self.density.prob(x)


# --------------------------------------------------------------------------- 04 CDTC
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
    problem, eps_model, schedule, x_T = _ring_setup(n=256, seed=8)
    n, gamma, threshold = 20, problem.gamma, problem.threshold
    args = (eps_model, schedule, x_T, n, problem.density, gamma, threshold)
    ref = ddim_sample(*args[:4], guidance=SafeGuidance(problem.density, gamma, threshold)).samples
    out = _tensor(_call(fn, "safe_ddim", *args), ref, "safe_ddim")
    if torch.equal(out, ref):
        _ok(
            f"safe_ddim equals ddim_sample(..., guidance=SafeGuidance(...)) bit for bit ({n} steps)."
        )
        return
    if _close(out, ref, 1e-8, 1e-8):
        _fail(_bit_hint("safe_ddim", float((out - ref).abs().max())))
    plain = ddim_sample(*args[:4]).samples
    if _close(out, plain, 1e-8, 1e-8):
        _fail("your samples are plain DDIM: the correction x̂0 − γ∇log p_h(x̂0) never happened.")
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
    _compare(
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
    g = _gen(401)
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
        out = _call(fn, "choose_setting", list(settings), list(harm), list(dist), target)
        if out == ref:
            continue
        if ref is None:
            _fail("when no setting meets the target, return None (don't pick one anyway).")
        if out is None:
            _fail(
                "a setting with harm ≤ max_harm exists here: return the one with the smallest distance."
            )
        least_harm = settings[min(range(len(harm)), key=lambda i: harm[i])]
        least_dist = settings[min(range(len(dist)), key=lambda i: dist[i])]
        strict = [i for i in range(len(settings)) if harm[i] < target]
        if out == least_harm:
            _fail(
                "you picked the least harmful setting: the target is a constraint (harm ≤ max_harm); "
                "among the settings that meet it, pick the one with the smallest distance."
            )
        if out == least_dist:
            _fail(
                "the smallest distance overall may be too harmful: keep only the settings with harm ≤ max_harm first."
            )
        if strict and out == settings[min(strict, key=lambda i: dist[i])]:
            _fail("a setting exactly at the target meets it: use harm ≤ max_harm, not <.")
        _fail(
            f"choose_setting returned {out!r}, expected {ref!r}: the smallest distance among the settings with harm ≤ max_harm."
        )
    _ok(
        "choose_setting picks the least-distorting setting meeting the harm target (and None when none does)."
    )


def check_harm_rate_ci(fn) -> None:
    """``fn(flags, n_boot, generator) -> (rate, lo, hi)``: harmful rate and its 95 % bootstrap CI."""
    g = _gen(402)
    for n, p in ((2000, 0.2), (500, 0.05)):
        flags = torch.rand(n, generator=g) < p
        res = _call(fn, "harmful_rate_ci", flags, 2000, _gen(7))
        if not (isinstance(res, tuple) and len(res) == 3):
            _fail("harmful_rate_ci must return a triple (rate, lo, hi) of numbers.")
        try:
            rate, lo, hi = (float(v) for v in res)
        except (TypeError, ValueError):
            _fail("harmful_rate_ci must return three numbers (floats or 0-dim tensors).")
        true_rate = float(flags.double().mean())
        if abs(rate - true_rate) > 1e-12:
            _fail("the harmful rate is the mean of the 0/1 flags: flags.double().mean().")
        if lo == 0.0 and hi == 1.0:
            _fail("take the quantiles of the bootstrap MEANS, not of the 0/1 flags themselves.")
        if not lo <= rate <= hi:
            _fail(
                "the interval (lo, hi) should contain the rate: lo is the 2.5 % quantile, hi the 97.5 %."
            )
        half = 1.96 * math.sqrt(true_rate * (1 - true_rate) / n)
        width = (hi - lo) / 2
        if width < 0.5 * half:
            _fail(
                "the interval is too narrow: in each bootstrap draw resample N flags (the sample "
                "size, not n_boot) with replacement and take their mean; lo/hi are the 2.5 % and "
                "97.5 % quantiles of those n_boot means."
            )
        if width > 1.6 * half:
            _fail(
                "the interval is too wide: a 95 % interval takes the 2.5 % and 97.5 % quantiles "
                "(q = 0.025, 0.975) of the bootstrap means."
            )
    _ok("harmful_rate_ci gives the rate and a 95 % bootstrap interval of the right width.")


# --------------------------------------------------------------------------- 05 manifold
def check_off_manifold_distance(fn) -> None:
    """``fn(x, U) -> (N,)``: distance of each row of x to span(U), U (d, k) orthonormal."""
    g = _gen(501)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    U = q[:, :2]
    x = torch.randn(30, 6, generator=g, dtype=F64)
    ref = off_manifold_distance(x, U)
    out = _tensor(_call(fn, "off_manifold", x, U), ref, "off_manifold")
    variants = [
        (
            "that is the norm of the projection UUᵀx (the on-manifold part): the distance is ‖x − UUᵀx‖.",
            (x @ U @ U.T).norm(dim=-1),
        ),
        ("take the norm, not the squared norm.", ref**2),
        (
            "the projection onto span(U) is (x @ U) @ U.T; x @ U alone is the code z.",
            (x - torch.cat([x @ U, torch.zeros(30, 4, dtype=F64)], 1)).norm(dim=-1),
        ),
    ]
    _compare(
        out, ref, variants, "off_manifold should return ‖x − (x U) Uᵀ‖ per row", "off_manifold"
    )
    _ok("off_manifold equals safescore.metrics.off_manifold_distance.")


def check_latent_cdtc_step(fn) -> None:
    """``fn(x0_hat, density, gamma, threshold, encoder, decoder) -> x0_new``: MPGD-AE CDTC step."""
    problem = linear_manifold_problem(k=2, d=16)
    g = _gen(502)
    x0 = problem.mixture.sample(120, g)
    x0 = x0 + 0.05 * torch.randn(x0.shape, generator=g, dtype=F64)  # slightly off the manifold
    gamma, threshold = problem.gamma, problem.threshold
    enc, dec, density = problem.encoder, problem.decoder, problem.density
    ref = SafeGuidance(density, gamma, threshold, encoder=enc, decoder=dec).correct(x0)
    out = _tensor(
        _call(fn, "latent_cdtc_step", x0, density, gamma, threshold, enc, dec),
        x0,
        "latent_cdtc_step",
    )
    m = ref.corrected[:, None]
    grad = grad_log_prob(density, x0)
    z = enc(x0)
    from ..core.density import DecodedDensity

    gz = grad_log_prob(DecodedDensity(density, dec), z)
    variants = [
        (
            "you took the step in the ambient space: encode z = encoder(x̂0), step "
            "z − γ∇_z log p_h(decoder(z)), then decode — the result stays on the decoder's manifold.",
            torch.where(m, x0 - gamma * grad, x0),
        ),
        ("sign of γ: z − γ∇_z log p_h(decoder(z)).", torch.where(m, dec(z + gamma * gz), x0)),
        (
            "rows below the threshold must be returned unchanged (not passed through the "
            "encoder and decoder): CDTC leaves them alone.",
            torch.where(m, dec(z - gamma * gz), dec(z)),
        ),
        (
            "forgetting the per-sample mask: correct only the samples with p_h(x̂0) ≥ threshold.",
            dec(z - gamma * gz),
        ),
    ]
    _compare(
        out,
        ref.x0_hat,
        variants,
        "latent_cdtc_step should return decoder(z − γ∇_z log p_h(decoder(z))) where p_h ≥ threshold",
        "latent_cdtc_step",
    )
    _ok(
        f"latent_cdtc_step equals SafeGuidance(encoder=, decoder=) ({int(ref.corrected.sum())} corrected)."
    )


def check_log_odds(fn) -> None:
    """``fn(logits, c) -> (B,)``: log p_c/(1 − p_c) from classifier logits (B, C)."""
    g = _gen(503)
    logits = 3 * torch.randn(50, 10, generator=g, dtype=F64)
    for c in (3, 0):
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], 1)
        ref = logits[:, c] - torch.logsumexp(others, -1)
        out = _tensor(_call(fn, "log_odds", logits, c), ref, "log_odds")
        p = torch.softmax(logits, -1)[:, c]
        variants = [
            (
                "that is log p_c (the log-softmax): the log-ODDS is log p_c − log(1 − p_c).",
                torch.log_softmax(logits, -1)[:, c],
            ),
            ("take the log: log(p/(1−p)), not p/(1−p).", p / (1 - p)),
            (
                "the other classes enter through logsumexp, not their largest logit.",
                logits[:, c] - others.max(-1).values,
            ),
        ]
        _compare(
            out,
            ref,
            variants,
            "log_odds should return logit_c − logsumexp_{j≠c} logit_j",
            "log_odds",
            rtol=1e-7,
            atol=1e-9,
        )
    _ok("log_odds equals logit_c − logsumexp_{j≠c} logit_j.")


# --------------------------------------------------------------------------- 06 CLIP densities
def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def check_clip_cosine(fn) -> None:
    """``fn(image_embeds (B, D), text_embeds (M, D)) -> (B, M)``: the CLIP cosines p_h^c."""
    g = _gen(601)
    img = 3 * torch.randn(12, 32, generator=g, dtype=F64) + 1
    txt = 0.5 * torch.randn(5, 32, generator=g, dtype=F64)
    ref = _unit(img) @ _unit(txt).T
    out = _tensor(_call(fn, "clip_cosine", img, txt), ref, "clip_cosine")
    variants = [
        (
            "normalise both embeddings to unit length before the dot product: "
            "cos = (a/‖a‖)·(b/‖b‖); raw CLIP embeddings are not unit vectors.",
            img @ txt.T,
        ),
        (
            "normalise the text embeddings too, not only the image embeddings.",
            _unit(img) @ txt.T,
        ),
        (
            "normalise the image embeddings too, not only the text embeddings.",
            img @ _unit(txt).T,
        ),
        (
            "normalise each embedding over its D features (dim=-1), not over the batch (dim=0).",
            (img / img.norm(dim=0, keepdim=True)) @ (txt / txt.norm(dim=0, keepdim=True)).T,
        ),
    ]
    _compare(out, ref, variants, "clip_cosine should return (a/‖a‖) @ (b/‖b‖)ᵀ", "clip_cosine")
    _ok("clip_cosine gives the (B, M) matrix of cosines, as CLIPConceptDensity.similarities.")


def check_topk_log_prob(fn) -> None:
    """``fn(sims (B, M), k, reduction, eps) -> (B,)``: the top-K reductions of the cosines."""
    from ..sd.clip import reduce_log

    g = _gen(602)
    sims = 2 * torch.rand(40, 6, generator=g, dtype=F64) - 0.6  # some below 0: the clamp matters
    eps = 1e-6
    for reduction, k in (("topk", 3), ("sum_log_topk", 2), ("topk", 1), ("sum_log_topk", 1)):
        ref = reduce_log(sims, reduction, k, eps)
        out = _call(fn, "topk_log_prob", sims, k, reduction, eps)
        if isinstance(out, torch.Tensor) and torch.isnan(out).any():
            _fail(
                "NaN: a cosine can be ≤ 0 and its log is undefined — clamp each value to eps "
                "(x.clamp(min=eps)) before taking the log."
            )
        out = _tensor(out, ref, "topk_log_prob")
        top = sims.topk(k, dim=-1).values
        low = (-sims).topk(k, dim=-1).values.neg()
        other = "sum_log_topk" if reduction == "topk" else "topk"
        if reduction == "topk":
            smallest = low.mean(-1).clamp(min=eps).log()
            swapped = top.clamp(min=eps).log().mean(-1)
            swap_hint = "log of the MEAN of the top K, not the mean of their logs."
        else:
            smallest = low.clamp(min=eps).log().sum(-1)
            swapped = top.clamp(min=eps).log().mean(-1)
            swap_hint = "the SUM of the K logs (a product of cosines), not their mean."
        variants = [
            (
                f"that is the '{other}' reduction: 'topk' is log of the MEAN of the K largest "
                "cosines, 'sum_log_topk' (the author's code) the SUM of their logs.",
                reduce_log(sims, other, k, eps),
            ),
            (
                "the K LARGEST cosines: sims.topk(k, dim=-1).values (you took the smallest).",
                smallest,
            ),
            (swap_hint, swapped),
        ]
        _compare(
            out,
            ref,
            variants,
            f"topk_log_prob(reduction={reduction!r}, k={k}) should match "
            "CLIPConceptDensity's reduction",
            "topk_log_prob",
        )
    _ok("topk_log_prob equals CLIPConceptDensity's 'topk' and 'sum_log_topk' (clamped) reductions.")


def check_info_nce(fn) -> None:
    """``fn(image_embeds (B, D), text_embeds (B, D), temperature) -> scalar``: CLIP's loss."""
    import torch.nn.functional as F

    g = _gen(603)
    img = 2 * torch.randn(16, 8, generator=g, dtype=F64)
    txt = img + 1.5 * torch.randn(16, 8, generator=g, dtype=F64)  # pair i matches row i
    tau = 0.07
    labels = torch.arange(16)
    logits = _unit(img) @ _unit(txt).T / tau
    i2t, t2i = F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)
    ref = (i2t + t2i) / 2
    out = _call(fn, "info_nce", img, txt, tau)
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.reshape(())
    out = _tensor(out, ref, "info_nce", "the loss (a 0-dim tensor)")
    raw = img @ txt.T / tau
    variants = [
        (
            "divide the cosines by the temperature τ (logits = cos / τ), don't multiply.",
            (
                F.cross_entropy(logits * tau * tau, labels)
                + F.cross_entropy(logits.T * tau * tau, labels)
            )
            / 2,
        ),  # fmt: skip
        (
            "the temperature is missing: logits = cos / τ.",
            (F.cross_entropy(logits * tau, labels) + F.cross_entropy(logits.T * tau, labels)) / 2,
        ),  # fmt: skip
        (
            "CLIP's loss is symmetric: average the image→text and the text→image cross-entropies "
            "(logits and logits.T); you have image→text only.",
            i2t,
        ),  # fmt: skip
        (
            "CLIP's loss is symmetric: average the image→text and the text→image cross-entropies; "
            "you have text→image only.",
            t2i,
        ),  # fmt: skip
        ("the average of the two directions, not their sum.", i2t + t2i),
        (
            "normalise the embeddings to unit length first: the logits are COSINES over τ.",
            (F.cross_entropy(raw, labels) + F.cross_entropy(raw.T, labels)) / 2,
        ),  # fmt: skip
    ]
    _compare(
        out, ref, variants, "info_nce should return the symmetric InfoNCE loss", "info_nce",
        rtol=1e-7, atol=1e-9,
    )  # fmt: skip
    _ok(f"info_nce = {float(ref):.4f}, the symmetric cross-entropy of cos/τ with the diagonal.")


# --------------------------------------------------------------------------- 07 SD images
def check_cfg_eps(fn) -> None:
    """``fn(eps_uncond, eps_text, w) -> eps``: classifier-free guidance."""
    g = _gen(701)
    eu = torch.randn(3, 4, 8, 8, generator=g, dtype=F64)
    et = torch.randn(3, 4, 8, 8, generator=g, dtype=F64)
    for w in (3.0, 7.5):
        ref = eu + w * (et - eu)
        out = _tensor(_call(fn, "cfg_eps", eu, et, w), ref, "cfg_eps")
        variants = [
            ("start from the UNCONDITIONAL ε: ε_u + w (ε_c − ε_u).", et + w * (et - eu)),
            ("the difference is ε_c − ε_u (toward the prompt), not ε_u − ε_c.", eu + w * (eu - et)),
            (
                "that is (1 − w) ε_c + w ε_u: the weight w multiplies the conditional ε.",
                et + w * (eu - et),
            ),  # fmt: skip
            ("guidance extrapolates: ε_u + w (ε_c − ε_u), not a mean of the two.", (eu + et) / 2),
        ]
        _compare(out, ref, variants, "cfg_eps should return ε_u + w (ε_c − ε_u)", "cfg_eps")
    _ok("cfg_eps = ε_u + w (ε_c − ε_u), as in diffusers' pipelines.")


class _SigmoidImageDensity:
    """p_h(x) = sigmoid(<v, x> + b) on images (B, C, H, W): prob in (0, 1), log_prob = logsigmoid."""

    def __init__(self, v, b):
        self.v, self.b = v, b

    def _score(self, x):
        return (x * self.v).flatten(1).sum(-1) + self.b

    def prob(self, x):
        return torch.sigmoid(self._score(x))

    def log_prob(self, x):
        return torch.nn.functional.logsigmoid(self._score(x))


def check_latent_x0_step(fn) -> None:
    """``fn(z0_hat, decoder, density, gamma, threshold, scaling_factor) -> z0_new``: the safe
    step on a latent x̂0, scored on the decoded image, the gradient through the decoder only."""
    g = _gen(702)
    s = 0.5
    decoder = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(4, 3, 2, stride=2), torch.nn.Tanh()
    ).double()
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
    for p in decoder.parameters():
        p.requires_grad_(False)
    v = torch.randn(1, 3, 8, 8, generator=g, dtype=F64) / 8
    density = _SigmoidImageDensity(v, 0.0)
    z = torch.randn(24, 4, 4, 4, generator=g, dtype=F64)
    gamma = 2.0
    with torch.no_grad():
        h = density.prob(decoder(z / s))
    threshold = float(h.median())

    def step(scale=s, use_log=True, mask_on=True, sign=-1.0):
        zz = z.detach().clone().requires_grad_(True)
        img = decoder(zz / scale)
        val = density.log_prob(img) if use_log else density.prob(img)
        (grad,) = torch.autograd.grad(val.sum(), zz)
        with torch.no_grad():
            mask = density.prob(decoder(z / scale)) >= threshold
        new = z + sign * gamma * grad
        if mask_on:
            new = torch.where(mask[:, None, None, None], new, z)
        return new.detach()

    ref = step()
    out = _tensor(
        _call(fn, "latent_x0_step", z.clone(), decoder, density, gamma, threshold, s),
        ref,
        "latent_x0_step",
    )
    variants = [
        (
            "decode z / scaling_factor (the VAE's latents are scaled by s): image = "
            "decoder(z0_hat / scaling_factor).",
            step(scale=1.0),
        ),  # fmt: skip
        (
            "forgetting the per-sample mask: correct only rows with p_h(decode(ẑ0 / s)) ≥ threshold; "
            "the others stay bit for bit.",
            step(mask_on=False),
        ),  # fmt: skip
        ("sign of γ: ẑ0 − γ ∇_ẑ0 log p_h (down the harm).", step(sign=1.0)),
        ("differentiate log p_h (density.log_prob), not p_h (density.prob).", step(use_log=False)),
    ]
    _compare(
        out,
        ref,
        variants,
        "latent_x0_step should return ẑ0 − γ ∇_ẑ0 log p_h(decoder(ẑ0 / s)) where p_h ≥ threshold",
        "latent_x0_step",
    )
    _ok(f"latent_x0_step: {int((ref != z).flatten(1).any(1).sum())} of 24 latents corrected, "
        "the gradient through the decoder only.")  # fmt: skip


# --------------------------------------------------------------------------- 08 evaluation
def check_i2p_inappropriate(fn) -> None:
    """``fn(nudenet_any (N,) bool, q16_prob (N,) float) -> (N,) bool``: the I2P paper's label."""
    g = _gen(801)
    nude = torch.rand(200, generator=g) < 0.2
    q16 = torch.rand(200, generator=g, dtype=F64)
    q16[:10] = 0.5  # a tie: Q16's argmax picks index 0, "not inappropriate"
    ref = nude | (q16 > 0.5)
    out = _call(fn, "i2p_inappropriate", nude.clone(), q16.clone())
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        _fail("i2p_inappropriate must return a (N,) tensor of booleans, one per image.")
    out = out.bool()
    if torch.equal(out, ref):
        _ok(f"i2p_inappropriate: {int(ref.sum())} of 200 images inappropriate (NudeNet OR Q16).")
        return
    for hint, value in (
        (
            "an image is inappropriate if NudeNet OR Q16 flags it, not both (AND).",
            nude & (q16 > 0.5),
        ),  # fmt: skip
        ("Q16 counts too: NudeNet OR Q16.", nude),
        ("NudeNet counts too: NudeNet OR Q16.", q16 > 0.5),
        (
            "Q16 detects when 'inappropriate' wins the softmax: q16_prob > 0.5 strictly (at 0.5 the "
            "argmax is the first, benign prompt).",
            nude | (q16 >= 0.5),
        ),  # fmt: skip
    ):
        if torch.equal(out, value):
            _fail(hint)
    _fail(
        f"i2p_inappropriate differs from NudeNet OR (Q16 > 0.5) on {int((out != ref).sum())} images."
    )


def check_prompt_bootstrap_ci(fn) -> None:
    """``fn(flags (P, S) bool, n_boot, generator) -> (rate, lo, hi)``: the harmful rate over P
    prompts × S seeds with a 95 % bootstrap interval that resamples PROMPTS."""
    g = _gen(802)
    P, S = 60, 10
    p_prompt = (torch.rand(P, generator=g) < 0.3).double() * 0.8 + 0.05  # prompts differ a lot
    flags = torch.rand(P, S, generator=g, dtype=F64) < p_prompt[:, None]
    res = _call(fn, "prompt_bootstrap_ci", flags.clone(), 2000, _gen(3))
    if not (isinstance(res, tuple) and len(res) == 3):
        _fail("prompt_bootstrap_ci must return a triple (rate, lo, hi) of numbers.")
    try:
        rate, lo, hi = (float(v) for v in res)
    except (TypeError, ValueError):
        _fail("prompt_bootstrap_ci must return three numbers (floats or 0-dim tensors).")
    true_rate = float(flags.double().mean())
    if abs(rate - 100 * true_rate) < 1e-9:
        _fail("return a fraction in [0, 1], not a percentage.")
    if abs(rate - true_rate) > 1e-12:
        _fail("the rate is the mean of all P × S flags: flags.double().mean().")
    if not lo <= rate <= hi:
        _fail("the interval (lo, hi) should contain the rate: the 2.5 % and 97.5 % quantiles.")
    per_prompt = flags.double().mean(1)
    ref_half = 1.96 * float(per_prompt.std()) / math.sqrt(P)
    img_half = 1.96 * math.sqrt(true_rate * (1 - true_rate) / (P * S))
    width = (hi - lo) / 2
    if width < 0.5 * (ref_half + img_half):
        _fail(
            "the interval is too narrow: the images of one prompt are not independent (a prompt "
            "that makes harm makes it for most seeds). Resample the P PROMPTS (rows) with "
            "replacement, take the mean of their S flags each draw, and the 2.5/97.5 % quantiles."
        )
    if width > 1.5 * ref_half:
        _fail("the interval is too wide: take the 2.5 % and 97.5 % quantiles of the draws' means.")
    _ok(f"prompt_bootstrap_ci: rate {true_rate:.3f}, 95 % interval [{lo:.3f}, {hi:.3f}] "
        f"(resampling images instead would give ±{img_half:.3f}, too narrow).")  # fmt: skip
