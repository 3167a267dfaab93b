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
    # A curved decoder: with the problem's linear orthonormal autoencoder the ambient gradient,
    # encoded, equals the latent one, and that mistake would pass.
    ae = _CurvedAutoencoder(problem.basis, seeded(504))
    enc, dec, density = ae.encode, ae.decode, problem.density
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
        (
            "you took the step in the ambient space and encoded the result: the gradient is "
            "∇_z log p_h(decoder(z)), through the decoder (autograd on the leaf z = "
            "encoder(x̂0).detach().requires_grad_(True)), and the step z − γ∇_z is taken on z.",
            torch.where(m, dec(enc(x0 - gamma * grad)), x0),
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


class _CurvedAutoencoder:
    """z = Uᵀx (B, d) -> (B, k); x = U z + a bend along a direction orthogonal to span(U)."""

    def __init__(self, basis: torch.Tensor, g: torch.Generator):
        self.basis = basis  # (d, k), orthonormal
        v = torch.randn(basis.shape[0], generator=g, dtype=F64)
        v = v - basis @ (basis.T @ v)
        self.normal = v / v.norm()  # (d,)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.basis

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        bend = 0.3 * torch.sin(1.5 * z[:, :1]) * torch.cos(z[:, 1:2])  # (B, 1)
        return z @ self.basis.T + bend * self.normal


def check_log_odds(fn) -> None:
    """``fn(logits, c) -> (B,)``: log p_c/(1 − p_c) from classifier logits (B, C)."""
    g = seeded(503)
    base = 3 * torch.randn(50, 10, generator=g, dtype=F64)
    for c in (3, 0):
        # Rows where p_c rounds to 1 (a margin of 60) or to 0 (800 below): log(p/(1−p)) is ±inf.
        logits = base.clone()
        logits[:5, c] = logits[:5].max(-1).values + 60
        logits[5:10, c] = logits[5:10].min(-1).values - 800
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], 1)
        ref = logits[:, c] - torch.logsumexp(others, -1)
        out = as_tensor(call_student(fn, "log_odds", logits.clone(), c), ref, "log_odds")
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
            nonfinite=(
                "±inf where p_c rounds to 1 or to 0 (logit margins of 60 and −800 here): "
                "log(p/(1−p)) overflows. Never form p: log p_c/(1 − p_c) = "
                "logit_c − logsumexp_{j≠c} logit_j (torch.logsumexp over the other classes)."
            ),
        )
    ok("log_odds equals logit_c − logsumexp_{j≠c} logit_j, finite for margins of +60 and −800.")
