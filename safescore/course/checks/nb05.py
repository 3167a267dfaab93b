"""Checks of notebook 05 manifold."""

from __future__ import annotations

import torch

from ...core import SafeGuidance
from ...core.density import DecodedDensity, grad_log_prob
from ...toy.metrics import off_manifold_distance
from ...toy.problems import linear_manifold_problem
from .hints import F64, as_tensor, call_student, compare, ok, seeded


def check_off_manifold_distance(fn) -> None:
    """``fn(x, U) -> (N,)``: distance of each row of x to span(U), U (d, k) orthonormal."""
    g = seeded(501)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    U = q[:, :2]
    x = torch.randn(30, 6, generator=g, dtype=F64)
    ref = off_manifold_distance(x, U)
    out = as_tensor(call_student(fn, "off_manifold", x, U), ref, "off_manifold")
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
    compare(out, ref, variants, "off_manifold should return ‖x − (x U) Uᵀ‖ per row", "off_manifold")
    ok("off_manifold equals safescore.metrics.off_manifold_distance.")


def check_latent_cdtc_step(fn) -> None:
    """``fn(x0_hat, density, gamma, threshold, encoder, decoder) -> x0_new``: MPGD-AE CDTC step."""
    problem = linear_manifold_problem(k=2, d=16)
    g = seeded(502)
    x0 = problem.mixture.sample(120, g)
    x0 = x0 + 0.05 * torch.randn(x0.shape, generator=g, dtype=F64)  # slightly off the manifold
    gamma, threshold = problem.gamma, problem.threshold
    enc, dec, density = problem.encoder, problem.decoder, problem.density
    ref = SafeGuidance(density, gamma, threshold, encoder=enc, decoder=dec).correct(x0)
    out = as_tensor(
        call_student(fn, "latent_cdtc_step", x0, density, gamma, threshold, enc, dec),
        x0,
        "latent_cdtc_step",
    )
    m = ref.corrected[:, None]
    grad = grad_log_prob(density, x0)
    z = enc(x0)
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
    compare(
        out,
        ref.x0_hat,
        variants,
        "latent_cdtc_step should return decoder(z − γ∇_z log p_h(decoder(z))) where p_h ≥ threshold",
        "latent_cdtc_step",
    )
    ok(
        f"latent_cdtc_step equals SafeGuidance(encoder=, decoder=) ({int(ref.corrected.sum())} corrected)."
    )


def check_log_odds(fn) -> None:
    """``fn(logits, c) -> (B,)``: log p_c/(1 − p_c) from classifier logits (B, C)."""
    g = seeded(503)
    logits = 3 * torch.randn(50, 10, generator=g, dtype=F64)
    for c in (3, 0):
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], 1)
        ref = logits[:, c] - torch.logsumexp(others, -1)
        out = as_tensor(call_student(fn, "log_odds", logits, c), ref, "log_odds")
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
        compare(
            out,
            ref,
            variants,
            "log_odds should return logit_c − logsumexp_{j≠c} logit_j",
            "log_odds",
            rtol=1e-7,
            atol=1e-9,
        )
    ok("log_odds equals logit_c − logsumexp_{j≠c} logit_j.")
