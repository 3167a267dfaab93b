"""Checks of notebook 06 CLIP densities."""

from __future__ import annotations

import torch

from .hints import F64, as_tensor, call_student, compare, fail, ok, seeded


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def check_clip_cosine(fn) -> None:
    """``fn(image_embeds (B, D), text_embeds (M, D)) -> (B, M)``: the CLIP cosines p_h^c."""
    g = seeded(601)
    img = 3 * torch.randn(12, 32, generator=g, dtype=F64) + 1
    txt = 0.5 * torch.randn(5, 32, generator=g, dtype=F64)
    ref = _unit(img) @ _unit(txt).T
    out = as_tensor(call_student(fn, "clip_cosine", img, txt), ref, "clip_cosine")
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
    compare(out, ref, variants, "clip_cosine should return (a/‖a‖) @ (b/‖b‖)ᵀ", "clip_cosine")
    ok("clip_cosine gives the (B, M) matrix of cosines, as CLIPConceptDensity.similarities.")


def check_topk_log_prob(fn) -> None:
    """``fn(sims (B, M), k, reduction, eps) -> (B,)``: the top-K reductions of the cosines."""
    from ...sd.clip import reduce_log  # the sd layer loads lazily

    g = seeded(602)
    sims = 2 * torch.rand(40, 6, generator=g, dtype=F64) - 0.6
    # The clamp matters: rows whose cosines are all ≤ 0, rows with one clear concept and the rest
    # ≤ 0 (a top-K mean below eps), a row with its largest cosine in (0, eps).
    sims[:6] = -0.5 * torch.rand(6, 6, generator=g, dtype=F64)
    sims[6:12] = -0.5 * torch.rand(6, 6, generator=g, dtype=F64)
    sims[6:12, 0] = 0.2 + 0.1 * torch.rand(6, generator=g, dtype=F64)
    sims[12] = torch.tensor([3e-7, -0.1, -0.2, -0.3, -0.4, 0.0], dtype=F64)
    eps = 1e-6
    for reduction, k in (("topk", 3), ("sum_log_topk", 2), ("topk", 1), ("sum_log_topk", 1)):
        ref = reduce_log(sims, reduction, k, eps)
        out = call_student(fn, "topk_log_prob", sims, k, reduction, eps)
        if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
            fail(
                "NaN or −inf: a cosine (or a top-K mean) can be ≤ 0 and its log is undefined — "
                "clamp to eps (x.clamp(min=eps)) right before every log."
            )
        out = as_tensor(out, ref, "topk_log_prob")
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
        if reduction == "topk":
            variants.append(
                (
                    "for 'topk' clamp the MEAN of the top K, log[(1/K) Σ s_j]^+ — not each cosine "
                    "before the mean (they differ when some of the K cosines are ≤ 0).",
                    top.clamp(min=eps).mean(-1).log(),
                )
            )
        compare(
            out,
            ref,
            variants,
            f"topk_log_prob(reduction={reduction!r}, k={k}) should match "
            "CLIPConceptDensity's reduction",
            "topk_log_prob",
        )
    ok("topk_log_prob equals CLIPConceptDensity's 'topk' and 'sum_log_topk' (clamped) reductions.")


def check_info_nce(fn) -> None:
    """``fn(image_embeds (B, D), text_embeds (B, D), temperature) -> scalar``: CLIP's loss."""
    import torch.nn.functional as F

    g = seeded(603)
    img = 2 * torch.randn(16, 8, generator=g, dtype=F64)
    txt = img + 1.5 * torch.randn(16, 8, generator=g, dtype=F64)  # pair i matches row i
    tau = 0.07
    labels = torch.arange(16)
    logits = _unit(img) @ _unit(txt).T / tau
    i2t, t2i = F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)
    ref = (i2t + t2i) / 2
    out = call_student(fn, "info_nce", img, txt, tau)
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.reshape(())
    out = as_tensor(out, ref, "info_nce", "the loss (a 0-dim tensor)")
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
    compare(
        out, ref, variants, "info_nce should return the symmetric InfoNCE loss", "info_nce",
        rtol=1e-7, atol=1e-9,
    )  # fmt: skip
    ok(f"info_nce = {float(ref):.4f}, the symmetric cross-entropy of cos/τ with the diagonal.")
