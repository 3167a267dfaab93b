"""The thesis' safe-sampling variants on Stable Diffusion, ready to use.

All use γ = 75 and η = 0.23 (thesis, "Safe Sampling" variants; DDIM, CFG 7 in the author's
``txt2img.py``). Each preset carries a ``label`` saying where it comes from:

    single      one CLIP concept, "violence and nudity"                        (slides)
    multi       CLIP concepts {violence, nudity, NSFW, harmful}, mean          (slides)
    multi-code  the same concepts, sum of log top-k with k = 1 (= log max cos) (the author's code)
    sd-filter   the 17 + 3 concept embeddings of Stable Diffusion's safety checker, mean
                (OUR interpretation: the released code builds p_h from text concepts only;
                ``special_care=False`` leaves the 3 special-care embeddings out of the mean)

Every preset takes ``preprocessing="clip"`` (default, CLIP's mean/std) or ``"author"`` (ImageNet's
mean/std, as the author's code; η = 0.23 was tuned with it).

Which of "multi" and "multi-code" produced the thesis' table is unknown (method.md).

`make_guidance` returns a `safescore.SafeGuidance` whose density already acts on
latents through the VAE decoder, for `SafeStableDiffusionPipeline` or
`SafeDDIMScheduler`.
"""

from __future__ import annotations

from ..core.guidance import SafeGuidance
from .latent import VaeDecodedDensity

THESIS_GAMMA = 75.0
THESIS_THRESHOLD = 0.23

PRESETS: dict[str, dict] = {
    "single": dict(
        label="slides: one concept",
        source="clip",
        concepts=("violence and nudity",),
        reduction="mean",
        gamma=THESIS_GAMMA,
        threshold=THESIS_THRESHOLD,
    ),
    "sd-filter": dict(
        label=(
            "our interpretation: the safety checker's 17 + 3 image-space concepts, mean "
            "(special_care=False: the 17 only); η = 0.23 is UNCALIBRATED in this ViT-L/14 space"
        ),
        source="safety_checker",
        concepts=None,
        reduction="mean",
        special_care=True,
        gamma=THESIS_GAMMA,
        threshold=THESIS_THRESHOLD,
    ),
    "multi": dict(
        label="slides: multi-concept mean",
        source="clip",
        concepts=("violence", "nudity", "NSFW", "harmful"),
        reduction="mean",
        gamma=THESIS_GAMMA,
        threshold=THESIS_THRESHOLD,
    ),
    "multi-code": dict(
        label="the author's code: sum of log top-k, k = 1",
        source="clip",
        concepts=("violence", "nudity", "NSFW", "harmful"),
        reduction="sum_log_topk",
        k=1,
        gamma=THESIS_GAMMA,
        threshold=THESIS_THRESHOLD,
    ),
}


def make_density(
    name: str,
    *,
    clip_model=None,
    tokenizer=None,
    safety_checker=None,
    concepts=None,
    reduction: str | None = None,
    k: int | None = None,
    preprocessing: str = "clip",
    special_care: bool | None = None,
):
    """The image density (on images in [-1, 1]) of preset ``name``; ``concepts`` overrides its list.

    ``preprocessing``: "clip" | "author" (ImageNet mean/std). ``special_care``: "sd-filter" only,
    include the safety checker's 3 special-care embeddings (default: the preset's, True).
    """
    from .clip import CLIPConceptDensity, SafetyCheckerDensity

    preset = _preset(name)
    reduction = reduction or preset["reduction"]
    if k is None and reduction == preset["reduction"]:
        k = preset.get("k")
    if preset["source"] == "safety_checker":
        if safety_checker is None:
            raise ValueError(
                f"preset {name!r} needs safety_checker= (diffusers StableDiffusionSafetyChecker)"
            )
        if concepts is not None:
            raise ValueError(
                f"preset {name!r} uses the safety checker's concepts; concepts must be None"
            )
        if special_care is None:
            special_care = preset["special_care"]
        return SafetyCheckerDensity(
            safety_checker,
            reduction=reduction,
            k=k,
            special_care=special_care,
            preprocessing=preprocessing,
        )
    if special_care is not None:
        raise ValueError(f"special_care is an option of preset 'sd-filter' only, not {name!r}")
    if clip_model is None or tokenizer is None:
        raise ValueError(f"preset {name!r} needs clip_model= and tokenizer= (a CLIP model)")
    return CLIPConceptDensity(
        clip_model,
        tokenizer,
        concepts or preset["concepts"],
        reduction=reduction,
        k=k,
        preprocessing=preprocessing,
    )


def make_guidance(
    name: str,
    *,
    clip_model=None,
    tokenizer=None,
    vae=None,
    safety_checker=None,
    gamma=None,
    threshold=None,
    concepts=None,
    reduction: str | None = None,
    k: int | None = None,
    preprocessing: str = "clip",
    special_care: bool | None = None,
    check_every: int = 1,
    autocast=None,
    checkpoint: bool = False,
    latent_pool: int = 1,
) -> SafeGuidance:
    """`safescore.SafeGuidance` for preset ``name`` in `PRESETS`.

    Args:
        name: "single" | "multi" | "multi-code" | "sd-filter" (see `PRESETS`' labels).
        clip_model, tokenizer: a CLIPModel and its tokenizer/processor ("single", "multi").
        vae: the pipeline's VAE, or a cheap one (``AutoencoderTiny``); the density is pulled
            back through its decoder (latent density). None returns guidance on images.
        safety_checker: a ``StableDiffusionSafetyChecker`` ("sd-filter").
        gamma, threshold: override the preset's γ = 75 and η = 0.23.
        concepts, reduction, k: override the preset's CLIP concepts / reduction.
        preprocessing: "clip" (default) | "author" (ImageNet mean/std, the author's code).
        special_care: "sd-filter" only: keep (True, the preset's default) or leave out (False)
            the safety checker's 3 special-care embeddings.
        check_every: evaluate p_h every k-th step only.
        autocast, checkpoint, latent_pool: options of the latent density (needs ``vae``), see
            `safescore.sd.latent.VaeDecodedDensity`.
    """
    preset = _preset(name)
    density = make_density(
        name,
        clip_model=clip_model,
        tokenizer=tokenizer,
        safety_checker=safety_checker,
        concepts=concepts,
        reduction=reduction,
        k=k,
        preprocessing=preprocessing,
        special_care=special_care,
    )
    if vae is not None:
        density = VaeDecodedDensity(
            density, vae, autocast=autocast, checkpoint=checkpoint, latent_pool=latent_pool
        )
    elif autocast is not None or checkpoint or latent_pool != 1:
        raise ValueError("autocast, checkpoint and latent_pool act on the decoder: pass vae=")
    return SafeGuidance(
        density,
        preset["gamma"] if gamma is None else gamma,
        preset["threshold"] if threshold is None else threshold,
        check_every=check_every,
    )


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {name!r}")
    return PRESETS[name]
