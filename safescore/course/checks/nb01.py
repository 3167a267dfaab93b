"""Checks of notebook 01 score matching."""

from __future__ import annotations

import math

import torch

from ...toy.gmm import GaussianMixture
from .hints import F64, as_tensor, call_student, compare, fail, ok, seeded


def _random_mixture(g, K=4, d=2):
    means = 2 * torch.randn(K, d, generator=g, dtype=F64)
    variances = 0.2 + torch.rand(K, generator=g, dtype=F64)  # different on purpose
    weights = torch.rand(K, generator=g, dtype=F64) + 0.2
    return means, variances, weights / weights.sum()


def check_gmm_score(fn) -> None:
    """``fn(x, means, variances, weights) -> (B, d)``: the exact score of an isotropic mixture."""
    g = seeded(101)
    for _ in range(3):
        means, variances, weights = _random_mixture(g)
        near = 2.5 * torch.randn(64, 2, generator=g, dtype=F64)
        far = 40 * _unit(torch.randn(16, 2, generator=g, dtype=F64))  # every density underflows
        x = torch.cat([near, far])
        ref = GaussianMixture(means, variances, weights).score(x)
        out = as_tensor(
            call_student(fn, "gmm_score", x, means, variances, weights), ref, "gmm_score"
        )
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
        compare(
            out,
            ref,
            variants,
            "gmm_score should return −Σ_k r_k(x) (x − μ_k)/σ_k² with r_k the responsibilities",
            "gmm_score",
            nonfinite=(
                "NaN or inf far from the modes: there every density w_k N_k(x) underflows to 0 "
                "and r_k = 0/0. Work with the log terms and take their softmax "
                "(torch.softmax(log_terms, dim=-1)), as the exercise says."
            ),
        )
    ok(
        "gmm_score equals GaussianMixture.score on 3 random mixtures, near the modes and 40 away "
        "from them."
    )


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


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
    g = seeded(102)
    B, d = 128, 3
    model = _TinyEps(d, g)
    x0 = torch.randn(B, d, generator=g, dtype=F64)
    t = torch.randint(0, 1000, (B,), generator=g)
    eps = torch.randn(B, d, generator=g, dtype=F64)
    a = 0.02 + 0.96 * torch.rand(B, generator=g, dtype=F64)
    out = call_student(fn, "dsm_loss", model, x0, t, eps, a)
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        fail(
            "dsm_loss must return a single number (a 0-dim tensor): average the squared errors "
            "with `.mean()`."
        )
    if not out.requires_grad:
        fail(
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
    compare(
        out.reshape(1),
        ref.reshape(1),
        [(h, v.reshape(1)) for h, v in variants],
        "dsm_loss should be mean((ε_θ(√ᾱ x0 + √(1−ᾱ) ε, t) − ε)²)",
        "dsm_loss",
    )
    ok("dsm_loss equals mean((ε_θ(√ᾱ x0 + √(1−ᾱ) ε, t) − ε)²) and is differentiable.")


def check_langevin_step(fn) -> None:
    """``fn(x, score, step_size, z) -> x_next``: one unadjusted Langevin step."""
    g = seeded(103)
    x = torch.randn(50, 2, generator=g, dtype=F64)
    score = torch.randn(50, 2, generator=g, dtype=F64)
    z = torch.randn(50, 2, generator=g, dtype=F64)
    for alpha in (0.01, 0.3):
        ref = x + alpha * score + math.sqrt(2 * alpha) * z
        out = as_tensor(call_student(fn, "langevin_step", x, score, alpha, z), ref, "langevin_step")
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
        compare(
            out, ref, variants, "langevin_step should return x + α·score + √(2α)·z", "langevin_step"
        )
    ok("langevin_step equals x + α ∇log p(x) + √(2α) z.")
