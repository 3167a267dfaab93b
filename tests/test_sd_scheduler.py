"""SafeDDIMScheduler: DDIMScheduler bit for bit without correction; safe sampling in diffusers'
own StableDiffusionPipeline and StableDiffusionXLPipeline; presets."""

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from safescore import NegativeGuidance, SafeGuidance
from safescore.densities import CLIPConceptDensity, SafetyCheckerDensity
from safescore.sd import PRESETS, SafeDDIMScheduler, SafeStableDiffusionPipeline, make_guidance
from safescore.sd.latent import VaeDecodedDensity
from safescore.sd.tiny import (
    ddim_scheduler,
    tiny_clip,
    tiny_components,
    tiny_safety_checker,
    tiny_sdxl_components,
)

SIZE = 32
KW = dict(num_inference_steps=3, height=SIZE, width=SIZE, output_type="np")


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=0)


@pytest.fixture(scope="module")
def density(clip):
    return CLIPConceptDensity(*clip, ["violence", "nudity"], reduction="matching")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_step_equals_ddim_step_without_guidance(eta):
    plain, safe = ddim_scheduler(), SafeDDIMScheduler.from_scheduler(ddim_scheduler())
    plain.set_timesteps(10)
    safe.set_timesteps(10)
    x = torch.randn(2, 4, 8, 8, generator=gen(1))
    eps = torch.randn(2, 4, 8, 8, generator=gen(2))
    for t in plain.timesteps[:4]:
        a = plain.step(eps, t, x, eta=eta, generator=gen(3))
        b = safe.step(eps, t, x, eta=eta, generator=gen(3))
        assert torch.equal(a.prev_sample, b.prev_sample)
        assert torch.equal(a.pred_original_sample, b.pred_original_sample)


def test_step_applies_the_x0_correction_with_the_original_eps():
    class Shift:  # an x̂0-space guidance that corrects every sample by -1
        def __call__(self, state):
            from safescore.core import GuidanceOutput

            B = state.x0_hat.shape[0]
            ones = torch.ones(B, dtype=torch.bool)
            return GuidanceOutput(state.eps, state.x0_hat - 1, torch.zeros(B), ones)

    plain, safe = ddim_scheduler(), ddim_scheduler()
    safe = SafeDDIMScheduler.from_scheduler(safe)
    safe.guidance = Shift()
    for s in (plain, safe):
        s.set_timesteps(10)
    x, eps = torch.randn(1, 4, 8, 8, generator=gen(1)), torch.randn(1, 4, 8, 8, generator=gen(2))
    t = plain.timesteps[2]
    a, b = plain.step(eps, t, x), safe.step(eps, t, x)
    a_prev = plain.alphas_cumprod[t - 100]
    # x_prev moves by sqrt(ᾱ_prev) · Δx̂0 (DDIM eq. 12 with ε unchanged).
    torch.testing.assert_close(b.prev_sample, a.prev_sample - a_prev.sqrt())
    harm, corrected = safe.history()
    assert harm.shape == corrected.shape == (1, 1) and corrected.all()


def test_in_stable_diffusion_pipeline(density):
    pipe = StableDiffusionPipeline(
        **tiny_components(0), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("a cat", generator=gen(), **KW).images
    # Never passing: bit for bit the plain images.
    pipe.scheduler = SafeDDIMScheduler.from_scheduler(
        pipe.scheduler, guidance=SafeGuidance(density, 100.0, threshold=1.0), vae=pipe.vae
    )
    assert np.abs(pipe("a cat", generator=gen(), **KW).images - plain).max() == 0.0
    harm, corrected = pipe.scheduler.history()
    assert harm.shape == (3, 1) and not corrected.any()
    # Always passing: moved, and the same images as SafeStableDiffusionPipeline's own loop.
    guidance = SafeGuidance(density, 100.0, threshold=0.0)
    pipe.scheduler.set_guidance(guidance, vae=pipe.vae)
    safe = pipe("a cat", generator=gen(), **KW).images
    assert pipe.scheduler.history()[1].all() and np.abs(safe - plain).max() > 1e-3
    ours = SafeStableDiffusionPipeline(**dict(pipe.components, scheduler=ddim_scheduler()))
    loop = ours("a cat", guidance=guidance, generator=gen(), **KW).images
    np.testing.assert_allclose(loop, safe, atol=1e-5)


def test_in_stable_diffusion_xl_pipeline(density):
    pipe = StableDiffusionXLPipeline(**tiny_sdxl_components(0))
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("a cat", generator=gen(), **KW).images
    pipe.scheduler = SafeDDIMScheduler.from_scheduler(
        pipe.scheduler, guidance=SafeGuidance(density, 100.0, threshold=1.0), vae=pipe.vae
    )
    assert np.abs(pipe("a cat", generator=gen(), **KW).images - plain).max() == 0.0
    pipe.scheduler.set_guidance(SafeGuidance(density, 100.0, threshold=0.0), vae=pipe.vae)
    safe = pipe("a cat", generator=gen(), **KW).images
    harm, corrected = pipe.scheduler.history()
    assert safe.shape == (1, SIZE, SIZE, 3) and corrected.shape == (3, 1) and corrected.all()
    assert np.isfinite(safe).all() and np.abs(safe - plain).max() > 1e-3


def test_wrapper_errors(density):
    with pytest.raises(TypeError, match="scheduler must be a diffusers DDIMScheduler"):
        SafeDDIMScheduler.from_scheduler(EulerDiscreteScheduler(), guidance=None)
    with pytest.raises(TypeError, match="guidance must be an x̂0-space guidance"):
        SafeDDIMScheduler.from_scheduler(ddim_scheduler(), guidance=NegativeGuidance(density, 1.0))
    with pytest.raises(ValueError, match="vae"):
        SafeDDIMScheduler.from_scheduler(ddim_scheduler(), guidance=SafeGuidance(density, 1.0))
    s = SafeDDIMScheduler.from_scheduler(DDIMScheduler())
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(torch.zeros(1), 1, torch.zeros(1))


def test_presets(clip):
    model, tok = clip
    vae = tiny_components(0)["vae"]
    assert set(PRESETS) == {"single", "sd-filter", "multi", "multi-code"}
    single = make_guidance("single", clip_model=model, tokenizer=tok, vae=vae)
    assert isinstance(single.density, VaeDecodedDensity)
    assert single.density.density.concepts == ("violence and nudity",)
    assert (single.gamma, single.threshold) == (75.0, 0.23)
    multi = make_guidance(
        "multi", clip_model=model, tokenizer=tok, vae=vae, gamma=10, threshold=0.1
    )
    assert multi.density.density.concepts == ("violence", "nudity", "NSFW", "harmful")
    assert (multi.gamma, multi.threshold) == (10.0, 0.1)
    sdf = make_guidance("sd-filter", clip_model=None, tokenizer=None, vae=None,
                        safety_checker=tiny_safety_checker(0))  # fmt: skip
    assert isinstance(sdf.density, SafetyCheckerDensity)  # vae=None: guidance on images
    with pytest.raises(ValueError, match="preset must be one of"):
        make_guidance("strong", clip_model=model, tokenizer=tok, vae=vae)
    with pytest.raises(ValueError, match="safety_checker"):
        make_guidance("sd-filter", clip_model=model, tokenizer=tok, vae=vae)
    with pytest.raises(ValueError, match="clip_model"):
        make_guidance("multi", clip_model=None, tokenizer=None, vae=vae)
    # A latent density decodes: p_h(z) = p_h(decode(z / s)).
    z = torch.randn(1, 4, 8, 8, generator=gen())
    image = vae.decode(z / vae.config.scaling_factor).sample
    torch.testing.assert_close(single.density.prob(z), single.density.density.prob(image))
