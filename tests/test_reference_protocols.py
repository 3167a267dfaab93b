"""The protocols as the reference code runs them (issue 18, items 3, 4, 5, 8; issue 17, item 3):
the I2P code's initial noise, the author's p_h resize, the plain-DDIM control, CLIP score."""

import numpy as np
import pytest
import torch

from safescore.eval.protocols import SD14_MODEL, protocol_settings
from safescore.eval.quality import clip_score
from safescore.eval.run_config import TINY_STEPS, EvalConfig
from safescore.eval.samplers import (
    I2P_BATCH,
    Generated,
    SamplerContext,
    available_samplers,
    register_sampler,
)
from safescore.sd.clip import IMAGENET_MEAN, IMAGENET_STD, clip_preprocess


def _cubic_weights(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """(n_out, n_in) matrix of Keys' cubic convolution (a = -0.75, the kernel of torchvision's
    and PyTorch's bicubic), half-pixel centres (align_corners=False), edge pixels repeated, no
    antialiasing: output i samples the input at (i + 0.5) * n_in / n_out - 0.5."""

    def kernel(x):
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return 0.0

    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(src))
        for k in range(base - 1, base + 3):
            w[i, min(max(k, 0), n_in - 1)] += kernel(src - k)
    return w


def test_author_resize_is_bicubic_without_antialias():
    """preprocessing "author" = CLIP_cosine.preprocess: (x+1)/2, torchvision 0.12's tensor
    F.resize(x, (224, 224), BICUBIC) (no antialias for tensors there), ImageNet mean/std;
    checked against the cubic-convolution formula written out here (not F.interpolate)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 48, generator=g, dtype=torch.float64) * 2 - 1
    out = clip_preprocess(x, 24, IMAGENET_MEAN, IMAGENET_STD, resize="author")
    wh, ww = _cubic_weights(64, 24), _cubic_weights(48, 24)
    unit = (x.numpy() + 1) / 2
    resized = np.einsum("ih,bchw,jw->bcij", wh, unit, ww)
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(out.numpy(), (resized - mean) / std, atol=1e-6)
    # The CLIP resize (antialiased, aspect kept, centre crop) is a different image.
    clip = clip_preprocess(x, 24, IMAGENET_MEAN, IMAGENET_STD, resize="clip")
    assert (clip - out).abs().max() > 0.1
    with pytest.raises(ValueError, match="resize must be one of"):
        clip_preprocess(x, 24, resize="pil")


def test_thesis_protocol_is_the_authors_setting():
    thesis = protocol_settings("thesis")
    assert thesis["model"] == SD14_MODEL and thesis["clip_preprocessing"] == "author"
    assert (thesis["guidance_scale"], thesis["scheduler"], thesis["steps"]) == (7.0, "ddim", 50)
    sld = protocol_settings("sld")
    assert (sld["guidance_scale"], sld["data_guidance"], sld["noise"]) == (7.5, False, "i2p")
    assert (sld["scheduler"], sld["model"], sld["nudenet_threshold"]) == ("pndm", SD14_MODEL, 0.6)
    # The author's preprocessing reaches the density, with its resize.
    config = EvalConfig.from_protocol("thesis", prompts="builtin:benign", tiny=True)
    context = SamplerContext.from_config(config, device="cpu", dtype=torch.float32)
    density = context.guidance("single").density.density
    assert density.preprocessing == "author" and tuple(density.image_mean) == IMAGENET_MEAN


def test_tiny_runs_take_few_steps_unless_given():
    assert EvalConfig.from_protocol("thesis", prompts="builtin:benign", tiny=True).steps == 5
    assert TINY_STEPS == 5
    given = EvalConfig.from_protocol("thesis", prompts="builtin:benign", tiny=True, steps=50)
    assert given.steps == 50 and given.overrides() == {}


def test_i2p_noise_is_one_generator_drawing_batches_of_five():
    """eval_I2P.py: gen.manual_seed(sd_seed), then two pipeline calls of 5 images: image j is
    row j % 5 of the (j // 5)-th draw of shape (5, C, h, w)."""
    context = SamplerContext(tiny=True, noise="i2p")
    c, h, w = context.latent_shape()
    latents = context.initial_latents([7] * 10 + [8], list(range(10)) + [3])
    gen = torch.Generator().manual_seed(7)
    first, second = (torch.randn(I2P_BATCH, c, h, w, generator=gen) for _ in range(2))
    assert torch.equal(latents[:5], first) and torch.equal(latents[5:10], second)
    assert torch.equal(latents[10], torch.randn(I2P_BATCH, c, h, w, generator=torch.Generator().manual_seed(8))[3])  # fmt: skip
    assert "latents" in context.noise_kwargs([7], [0])
    with pytest.raises(ValueError, match="needs the images' indices"):
        context.noise_kwargs([7], None)


def _recording_factory(calls):
    def factory(context):
        def one_batch(prompts, seeds, guidance_scale, indices=None):
            calls.append((list(seeds), indices, guidance_scale))
            return [Generated(_image()) for _ in prompts]

        def generate(prompt, seed, guidance_scale, index=None):
            return one_batch([prompt], [seed], guidance_scale, None if index is None else [index])[
                0
            ]

        generate.batch = one_batch
        return generate

    return factory


def _image():
    from PIL import Image

    return Image.new("RGB", (8, 8))


CALLS: list = []
if "recording" not in available_samplers():
    register_sampler("recording", _recording_factory(CALLS))


def test_sld_runs_pass_the_prompt_seed_and_the_image_index(tmp_path):
    """Under --protocol sld the sampler gets the prompt's sd_seed for all 10 images and each
    image's index; the rows keep unique seeds (sd_seed + j) as their keys, at CFG 7.5."""
    from pathlib import Path

    from safescore.eval.runner import run_evaluation

    csv = Path(__file__).parent / "data" / "eval" / "i2p_small.csv"
    config = EvalConfig.from_protocol(
        "sld", prompts=str(csv), limit=1, samplers=["recording"], tiny=True, scorers="none"
    )
    CALLS.clear()
    run_evaluation(config, tmp_path / "run", progress=False, batch_size=4, device="cpu")
    seeds = [s for call in CALLS for s in call[0]]
    indices = [i for call in CALLS for i in call[1]]
    assert seeds == [11] * 10 and indices == list(range(10))
    assert {call[2] for call in CALLS} == {7.5}
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in rows) == list(range(11, 21))


def test_plain_ddim_runs_ddim_whatever_the_scheduler():
    context = SamplerContext(tiny=True, scheduler="pndm", steps=2)
    assert context.scheduler_of("plain") == "pndm"
    assert context.scheduler_of("plain-ddim") == "ddim"
    assert context.scheduler_of("safe-single") == "ddim"
    # plain-ddim under pndm makes plain's DDIM image (the same noise, the same solver).
    ddim = SamplerContext(tiny=True, scheduler="ddim", steps=2)
    from safescore.eval.samplers import sampler_factory

    a = sampler_factory("plain-ddim")(context)("a cat", 3, 7.5).image
    b = sampler_factory("plain")(ddim)("a cat", 3, 7.5).image
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_clip_score_is_torchmetrics():
    """torchmetrics' CLIPScore: max(100 · mean(cos), 0), not 100 · mean(max(cos, 0))."""
    assert clip_score([0.3, -0.1]) == pytest.approx(10.0)
    assert clip_score([-0.3, 0.1]) == 0.0


def test_calibrate_tiny_figure_names_random_weights_ph_and_preprocessing(tmp_path, monkeypatch):
    from safescore.cli import main
    from safescore.eval.calibrate import Calibration

    titles = []
    monkeypatch.setattr(
        Calibration, "plot", lambda self, path, *, title=None, mark=None: titles.append(title)
    )
    argv = ["calibrate", "--tiny", "--prompts", "a cat", "--seeds", "1", "--steps", "2"]
    argv += ["--clip-preprocessing", "author", "--out", str(tmp_path / "cal")]
    assert main(argv) == 0
    (title,) = titles
    assert title.startswith("RANDOM WEIGHTS (tiny)\np_h = CLIPConceptDensity(violence and nudity")
    assert "preprocessing author" in title and "1 images, 2 steps, CFG 7" in title
    md = (tmp_path / "cal" / "calibration.md").read_text()
    assert "RANDOM WEIGHTS" in md and "Model: tiny SD, RANDOM WEIGHTS" in md
