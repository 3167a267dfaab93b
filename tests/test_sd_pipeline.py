"""SafeStableDiffusionPipeline on tiny random components: parity with diffusers, CDTC, errors."""

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline

from safescore import NegativeGuidance, SafeGuidance
from safescore.densities import CLIPConceptDensity, HarmDensity
from safescore.sd import SafeStableDiffusionPipeline
from safescore.sd.tiny import tiny_clip, tiny_components

SIZE = 32  # 32² images = 16² latents: the tiny UNet at its smallest
PROMPTS = ["a cat", "the violence"]


@pytest.fixture(scope="module")
def components():
    return tiny_components(seed=0)


@pytest.fixture(scope="module")
def pipes(components):
    ref = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ours = SafeStableDiffusionPipeline(**components)
    return ref, ours


@pytest.fixture(scope="module")
def density():
    clip_model, tokenizer = tiny_clip(seed=0)
    # "matching" has a non-zero gradient for any image, so a passing sample always moves.
    return CLIPConceptDensity(clip_model, tokenizer, ["violence", "nudity"], reduction="matching")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class CountDecoderBackward:
    """Counts backward passes through the VAE decoder and the batch size of grad-enabled decodes."""

    def __init__(self, vae):
        self.backward = 0
        self.grad_batches = []
        self.handles = [
            vae.decoder.register_full_backward_hook(self._on_backward),
            vae.decoder.register_forward_hook(self._on_forward),
        ]

    def _on_backward(self, module, grad_in, grad_out):
        self.backward += 1

    def _on_forward(self, module, inputs, output):
        if torch.is_grad_enabled():
            self.grad_batches.append(inputs[0].shape[0])

    def remove(self):
        for h in self.handles:
            h.remove()


class FirstSampleHarmful(HarmDensity):
    """prob = 1 for the first sample of the batch, 0 for the others; log_prob from CLIP."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def prob(self, x):
        p = torch.zeros(x.shape[0])
        p[0] = 1.0
        return p

    def log_prob(self, x):
        return self.inner.log_prob(x)


def test_plain_equals_diffusers_bit_for_bit(pipes):
    ref, ours = pipes
    kw = dict(num_inference_steps=3, height=SIZE, width=SIZE, output_type="np")
    neg = ["blurry", ""]
    a = ref(PROMPTS, negative_prompt=neg, generator=gen(), **kw).images
    b = ours(PROMPTS, negative_prompt=neg, generator=gen(), **kw).images
    assert a.shape == b.shape == (2, SIZE, SIZE, 3)
    assert np.abs(a - b).max() == 0.0


def test_generator_list_images_per_prompt_and_eta_match_diffusers(pipes):
    ref, ours = pipes
    kw = dict(num_inference_steps=2, height=SIZE, width=SIZE, output_type="np")
    gens = lambda: [gen(1), gen(2)]  # noqa: E731
    a = ref("a dog", num_images_per_prompt=2, generator=gens(), **kw).images
    b = ours("a dog", num_images_per_prompt=2, generator=gens(), **kw).images
    assert np.abs(a - b).max() == 0.0
    a = ref("a dog", eta=0.7, generator=gen(3), **kw).images
    b = ours("a dog", eta=0.7, generator=gen(3), **kw).images
    assert np.abs(a - b).max() == 0.0


def test_never_passing_threshold_is_plain_and_never_backpropagates(pipes, density):
    ref, ours = pipes
    kw = dict(num_inference_steps=3, height=SIZE, width=SIZE, output_type="np")
    plain = ref(PROMPTS, generator=gen(), **kw).images
    counter = CountDecoderBackward(ours.vae)
    try:
        out = ours(
            PROMPTS, guidance=SafeGuidance(density, 75.0, threshold=1.0), generator=gen(),
            record=True, **kw,
        )  # fmt: skip
    finally:
        counter.remove()
    assert np.abs(out.images - plain).max() == 0.0
    assert counter.backward == 0 and counter.grad_batches == []  # the check ran under no_grad
    assert out.harm.shape == out.corrected.shape == (3, 2)
    assert not out.corrected.any() and torch.isfinite(out.harm).all()


def test_cdtc_decodes_and_corrects_only_passing_samples(pipes, density):
    _, ours = pipes
    kw = dict(num_inference_steps=3, height=SIZE, width=SIZE, output_type="np")
    plain = ours(PROMPTS, generator=gen(), **kw).images
    counter = CountDecoderBackward(ours.vae)
    try:
        guidance = SafeGuidance(FirstSampleHarmful(density), 200.0, threshold=0.5)
        out = ours(PROMPTS, guidance=guidance, generator=gen(), record=True, **kw)
    finally:
        counter.remove()
    assert counter.backward == 3 and counter.grad_batches == [1, 1, 1]
    assert out.corrected[:, 0].all() and not out.corrected[:, 1].any()
    assert np.abs(out.images[0] - plain[0]).max() > 0  # corrected sample moved
    assert np.abs(out.images[1] - plain[1]).max() == 0.0  # the other one is bit-for-bit plain


def test_negative_guidance_records_and_previews(pipes, density):
    _, ours = pipes
    out = ours(
        "a cat", guidance=NegativeGuidance(density, 50.0), num_inference_steps=2, height=SIZE,
        width=SIZE, generator=gen(), output_type="np", record_previews=True,
    )  # fmt: skip
    plain = ours("a cat", num_inference_steps=2, height=SIZE, width=SIZE, generator=gen()).images
    assert out.corrected.all() and out.harm.shape == (2, 1)
    assert out.x0_previews.shape == out.x0_previews_guided.shape == (2, 1, SIZE, SIZE, 3)
    assert 0 <= out.x0_previews.min() and out.x0_previews.max() <= 1
    assert np.abs(out.images[0] - np.asarray(plain[0]) / 255.0).max() > 1e-3


def test_output_types_and_default_size(pipes):
    _, ours = pipes
    lat = ours("x", num_inference_steps=1, height=SIZE, width=SIZE, output_type="latent").images
    assert lat.shape == (1, 4, SIZE // 2, SIZE // 2)
    pil = ours("x", num_inference_steps=1, height=SIZE, width=SIZE * 2, output_type="pil").images
    assert pil[0].size == (SIZE * 2, SIZE)
    assert ours.random_weights is False
    assert ours.unet.config.sample_size * ours.vae_scale_factor == 64  # the default size


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(height=30), "height"),
        (dict(width=33), "width"),
        (dict(generator=[torch.Generator()] * 3), "generator"),
        (dict(negative_prompt=["a", "b", "c"]), "negative_prompt"),
        (dict(output_type="jpeg"), "output_type"),
        (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    ],
)
def test_bad_input_names_the_parameter(pipes, kwargs, match):
    _, ours = pipes
    with pytest.raises((ValueError, TypeError), match=match):
        ours(PROMPTS, num_inference_steps=1, **kwargs)


def test_non_ddim_scheduler_is_refused(components):
    parts = dict(components, scheduler=PNDMScheduler())
    with pytest.raises(TypeError, match="scheduler must be a diffusers DDIMScheduler"):
        SafeStableDiffusionPipeline(**parts)


def test_save_and_load_round_trip_offline(pipes, tmp_path):
    _, ours = pipes
    ours.save_pretrained(tmp_path / "tiny")
    loaded = SafeStableDiffusionPipeline.from_pretrained(tmp_path / "tiny")
    loaded.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=1, height=SIZE, width=SIZE, output_type="np")
    a = ours("a cat", generator=gen(), **kw).images
    b = loaded("a cat", generator=gen(), **kw).images
    assert np.abs(a - b).max() == 0.0


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(
        FileNotFoundError, match="not found locally; pass a local path or use --tiny"
    ):
        SafeStableDiffusionPipeline.from_pretrained(tmp_path / "nothing-here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not found locally"):
        SafeStableDiffusionPipeline.from_pretrained("no-such-org/no-such-model")


def test_safescore_sd_imports_diffusers_lazily(modules_in_a_fresh_process):
    import diffusers

    import safescore.sd

    loaded = modules_in_a_fresh_process["import safescore.sd, safescore.cli.generate"]
    assert {"safescore.sd", "safescore.cli.generate"} <= loaded
    assert "diffusers" not in loaded and "transformers" not in loaded
    # the first use of a name that needs diffusers imports it
    assert issubclass(safescore.sd.SafeDDIMScheduler, diffusers.DDIMScheduler)
