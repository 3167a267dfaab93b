"""Checks of notebook 07 SD images."""

from __future__ import annotations

import torch

from .hints import F64, as_tensor, call_student, compare, ok, seeded


def check_cfg_eps(fn) -> None:
    """``fn(eps_uncond, eps_text, w) -> eps``: classifier-free guidance."""
    g = seeded(701)
    eu = torch.randn(3, 4, 8, 8, generator=g, dtype=F64)
    et = torch.randn(3, 4, 8, 8, generator=g, dtype=F64)
    for w in (3.0, 7.5):
        ref = eu + w * (et - eu)
        out = as_tensor(call_student(fn, "cfg_eps", eu, et, w), ref, "cfg_eps")
        variants = [
            ("start from the UNCONDITIONAL ε: ε_u + w (ε_c − ε_u).", et + w * (et - eu)),
            ("the difference is ε_c − ε_u (toward the prompt), not ε_u − ε_c.", eu + w * (eu - et)),
            (
                "that is (1 − w) ε_c + w ε_u: the weight w multiplies the conditional ε.",
                et + w * (eu - et),
            ),  # fmt: skip
            ("guidance extrapolates: ε_u + w (ε_c − ε_u), not a mean of the two.", (eu + et) / 2),
        ]
        compare(out, ref, variants, "cfg_eps should return ε_u + w (ε_c − ε_u)", "cfg_eps")
    ok("cfg_eps = ε_u + w (ε_c − ε_u), as in diffusers' pipelines.")


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
    g = seeded(702)
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
    out = as_tensor(
        call_student(fn, "latent_x0_step", z.clone(), decoder, density, gamma, threshold, s),
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
    compare(
        out,
        ref,
        variants,
        "latent_x0_step should return ẑ0 − γ ∇_ẑ0 log p_h(decoder(ẑ0 / s)) where p_h ≥ threshold",
        "latent_x0_step",
    )
    ok(f"latent_x0_step: {int((ref != z).flatten(1).any(1).sum())} of 24 latents corrected, "
        "the gradient through the decoder only.")  # fmt: skip
