"""Checks of notebook 03 guidance."""

from __future__ import annotations

import math

import torch

from ...core import NegativeGuidance, SafeGuidance, predict_x0
from ...core.density import grad_log_prob
from ...core.protocol import GuidanceState
from ...toy.problems import ring_problem
from .hints import F64, as_tensor, call_student, close, compare, fail, ok, seeded
from .nb02 import ring_setup


def check_classifier_guided_eps(fn) -> None:
    """``fn(eps, grad_log_p_y, alpha_bar, scale) -> eps_guided``: classifier guidance's ε shift."""
    g = seeded(301)
    for a, s in ((0.3, 1.0), (0.8, 4.0)):
        eps = torch.randn(40, 2, generator=g, dtype=F64)
        grad = torch.randn(40, 2, generator=g, dtype=F64)
        c = math.sqrt(1 - a)
        ref = eps - s * c * grad
        out = as_tensor(
            call_student(fn, "classifier_guided_eps", eps, grad, a, s), ref, "classifier_guided_eps"
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
        compare(
            out,
            ref,
            variants,
            "classifier_guided_eps should return ε − s√(1−ᾱ_t)∇log p(y|x_t)",
            "classifier_guided_eps",
        )
    ok("classifier_guided_eps equals ε − s√(1−ᾱ_t)∇log p(y|x_t).")


def check_negative_guidance_eps(fn) -> None:
    """``fn(eps_model, x_t, t, alpha_bar, density, gamma) -> eps``: negative guidance in x_t space."""
    problem, eps_model, schedule, _ = ring_setup()
    g = seeded(302)
    t, gamma = 500, 0.03
    a = schedule.alpha_bar(t)
    x_t = problem.mixture.noised(a).sample(64, g)
    state = GuidanceState(
        x_t=x_t, t=t, t_next=t - 20, step_index=0, num_steps=1, alpha_bar_t=a,
        eps=None, x0_hat=None, eps_model=eps_model,
    )  # fmt: skip
    ref = NegativeGuidance(problem.density, gamma)(state).eps
    out = as_tensor(
        call_student(fn, "negative_guided_eps", eps_model, x_t, t, a, problem.density, gamma),
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
    compare(
        out, ref, variants, "negative_guided_eps should return ε + γ√(1−ᾱ_t)∇_{x_t} log p_h(x̂0(x_t))",
        "negative_guided_eps", rtol=1e-7, atol=1e-9,
    )  # fmt: skip
    ok("negative_guided_eps equals safescore.NegativeGuidance's ε.")


def _ring_x0(problem, n, g):
    """x̂0-like points: half near the harmful modes, half anywhere near the ring."""
    x = problem.mixture.sample(n, g)
    return x + 0.3 * torch.randn(x.shape, generator=g, dtype=F64)


def check_cdtc_step(fn) -> None:
    """``fn(x0_hat, density, gamma, threshold) -> (x0_new, mask)``: the CDTC-gated x̂0 step.

    Run twice: at threshold 0.5, and at a threshold equal to one sample's p_h(x̂0) (that sample
    is corrected: the text's ``>=``).
    """
    problem = ring_problem()
    density, g = problem.density, seeded(303)
    gamma = 0.01
    x0 = _ring_x0(problem, 200, g)
    harm = density.prob(x0)
    at_threshold = float(harm[(harm - 0.5).abs().argmin()])
    for threshold in (0.5, at_threshold):
        corrected = _check_cdtc_once(fn, x0, density, gamma, threshold, harm)
    ok(
        f"cdtc_step equals SafeGuidance.correct ({corrected} of {len(x0)} corrected; a sample "
        "exactly at the threshold is corrected)."
    )


def _check_cdtc_once(fn, x0, density, gamma, threshold, harm) -> int:
    ref = SafeGuidance(density, gamma, threshold).correct(x0)
    res = call_student(fn, "cdtc_step", x0.clone(), density, gamma, threshold)
    if not (isinstance(res, tuple) and len(res) == 2):
        fail("cdtc_step must return a pair (x0_new, mask).")
    out = as_tensor(res[0], x0, "cdtc_step", "x0_new")
    mask = res[1]
    if not isinstance(mask, torch.Tensor) or mask.shape != ref.corrected.shape:
        fail(f"the mask must be a bool tensor of shape ({len(x0)},): one decision per sample.")
    mask = mask.bool()
    if not torch.equal(mask, ref.corrected):
        if torch.equal(mask, harm < threshold):
            fail("the mask is reversed: correct the samples with p_h(x̂0) ≥ threshold.")
        if torch.equal(mask, harm > threshold):
            fail(
                "a sample whose p_h(x̂0) equals the threshold exactly is corrected too: "
                "density.prob(x0_hat) >= threshold, not >."
            )
        if torch.equal(mask, density.log_prob(x0) >= threshold):
            fail(
                "compare density.prob(x̂0) (a probability in [0, 1]) with the threshold, not log_prob."
            )
        fail("the mask should be density.prob(x0_hat) >= threshold, one entry per sample.")
    keep = ~ref.corrected
    grad = grad_log_prob(density, x0)
    grad_p = grad_log_prob(ProbAsLog(density), x0)
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
    if not torch.equal(out[keep], x0[keep]) and not close(out, x0 - gamma * grad):
        fail(
            "samples below the threshold must be returned bit for bit unchanged: CDTC leaves "
            "them alone."
        )
    compare(
        out,
        ref.x0_hat,
        variants,
        "cdtc_step should return x̂0 − γ∇log p_h(x̂0) where p_h ≥ threshold",
        "cdtc_step",
    )
    return int(ref.corrected.sum())


class ProbAsLog:
    """A density whose 'log_prob' is its prob: the known-wrong variant 'differentiate prob'."""

    def __init__(self, density):
        self.density = density

    def log_prob(self, x):
        return self.density.prob(x)
