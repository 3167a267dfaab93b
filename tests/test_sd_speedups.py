"""Speed-ups of safe sampling on Stable Diffusion change nothing where they must not.

Tiny random-weight components (the numbers mean nothing, the code paths are the real ones):
γ window / check interval, a cheap decoder (AutoencoderTiny) for the density, decoder gradient
checkpointing, autocast off by default, a pooled decode, DPM-Solver++(2M) against diffusers, the
device-side timesteps, and a smoke run of ``benchmarks/sd_overhead.py``.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

from safescore import SafeGuidance, window
from safescore.densities import CLIPConceptDensity
from safescore.sd import SafeStableDiffusionPipeline
from safescore.sd.clip import clip_preprocess
from safescore.sd.latent import (
    VaeDecodedDensity,
    VaeDecoder,
    latent_guidance,
    load_tiny_vae,
)
from safescore.sd.presets import make_guidance
from safescore.sd.tiny import tiny_clip, tiny_components, tiny_taesd

SIZE = 32  # 32² images = 16² latents
STEPS = 3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def components():
    return tiny_components(seed=0)


@pytest.fixture(scope="module")
def pipe(components):
    return SafeStableDiffusionPipeline(**components)


@pytest.fixture(scope="module")
def density():
    clip_model, tokenizer = tiny_clip(seed=0)
    return CLIPConceptDensity(clip_model, tokenizer, ["violence", "nudity"], reduction="matching")


@pytest.fixture(scope="module")
def taesd():
    return tiny_taesd(seed=0)


def run(pipe, guidance=None, steps=STEPS, **kwargs):
    kwargs.setdefault("output_type", "latent")
    return pipe(
        ["a cat", "the violence"],
        guidance=guidance,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        height=SIZE,
        width=SIZE,
        **kwargs,
    )


# --------------------------------------------------------------------------- window / interval
def test_full_window_and_check_every_one_equal_the_default_bit_for_bit(pipe, density):
    default = run(pipe, SafeGuidance(density, 10.0), record=True)
    assert default.corrected.all()
    for guidance in (
        SafeGuidance(density, window(10.0, 0.0, 1.0)),
        SafeGuidance(density, 10.0, check_every=1),
        SafeGuidance(density, window(10.0, 0.0, 1.0), check_every=1),
    ):
        out = run(pipe, guidance, record=True)
        assert torch.equal(out.images, default.images)
        assert torch.equal(out.corrected, default.corrected)


def test_window_and_interval_skip_the_density(pipe, density):
    plain = run(pipe, steps=5)
    out = run(pipe, SafeGuidance(density, window(10.0, 0.3, 0.7)), steps=5, record=True)
    # Steps 0, 1 (fractions 0, 0.25) and 3, 4 (0.75, 1) lie outside: harm NaN, nothing corrected.
    assert out.corrected.any(dim=1).tolist() == [False, False, True, False, False]
    assert torch.isnan(out.harm[[0, 1, 3, 4]]).all() and not torch.isnan(out.harm[2]).any()
    every2 = run(pipe, SafeGuidance(density, 10.0, check_every=2), steps=5, record=True)
    assert every2.corrected.any(dim=1).tolist() == [True, False, True, False, True]
    assert not torch.equal(out.images, plain.images)


# --------------------------------------------------------------------------- cheap decoder
def test_tiny_vae_loads_from_a_path(taesd, tmp_path):
    taesd.save_pretrained(tmp_path / "taesd")
    loaded = load_tiny_vae(tmp_path / "taesd")
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(VaeDecoder(loaded)(z), VaeDecoder(taesd)(z))
    with pytest.raises(FileNotFoundError, match="not found locally"):
        load_tiny_vae(tmp_path / "missing")


def test_cheap_decoder_is_used_for_the_density_only(pipe, density, taesd):
    plain = run(pipe, output_type="pt")
    # Nothing passes: the final image (real VAE) equals plain sampling bit for bit.
    never = run(
        pipe, SafeGuidance(density, 10.0, threshold=1.0), density_vae=taesd, output_type="pt"
    )
    assert torch.equal(never.images, plain.images)
    # Every sample passes: the recorded harm is p_h of the TAESD decode, not of the VAE decode.
    out = run(pipe, SafeGuidance(density, 10.0), density_vae=taesd, record=True)
    z0 = out.x0_latents[0]
    with torch.no_grad():
        via_taesd = density.prob(VaeDecoder(taesd)(z0))
        via_vae = density.prob(VaeDecoder(pipe.vae)(z0))
    torch.testing.assert_close(out.harm[0].float(), via_taesd)
    assert not torch.allclose(via_taesd, via_vae)
    assert not torch.equal(out.images, run(pipe).images)
    # Same result through latent_guidance / make_guidance with vae=taesd.
    again = run(pipe, latent_guidance(SafeGuidance(density, 10.0), taesd))
    assert torch.equal(again.images, out.images)


def test_density_vae_errors(pipe, density, taesd):
    latent = latent_guidance(SafeGuidance(density, 10.0), pipe.vae)
    with pytest.raises(ValueError, match="already acts on latents"):
        run(pipe, latent, density_vae=taesd)
    with pytest.raises(TypeError, match="density_vae must be a diffusers autoencoder"):
        run(pipe, SafeGuidance(density, 10.0), density_vae="taesd")
    with pytest.raises(ValueError, match="set autocast, checkpoint and latent_pool"):
        latent_guidance(latent, pipe.vae, checkpoint=True)


# --------------------------------------------------------------------------- memory / precision
@pytest.mark.parametrize("which", ["vae", "taesd"])
def test_checkpointing_gives_the_same_gradient_and_keeps_the_flags_on(pipe, density, taesd, which):
    import copy

    vae = copy.deepcopy(pipe.vae if which == "vae" else taesd)  # the flags stay on: a private copy
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    plain = VaeDecodedDensity(density, vae)
    with torch.no_grad():
        decoded_before = plain.decoder(z)
    ckpt = VaeDecodedDensity(density, vae, checkpoint=True)
    # on for good: autograd recomputes the blocks in the backward pass with the same flags
    assert all(
        m.gradient_checkpointing
        for m in vae.decoder.modules()
        if hasattr(m, "gradient_checkpointing")
    )
    g_plain = VaeDecodedDensity(
        density, copy.deepcopy(pipe.vae if which == "vae" else taesd)
    ).grad_log_prob(z)
    g_ckpt = ckpt.grad_log_prob(z)
    assert g_plain.abs().sum() > 0
    torch.testing.assert_close(g_ckpt, g_plain, rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # checkpointing acts only with gradients: a no_grad decode is unchanged
        assert torch.equal(plain.decoder(z), decoded_before)


def test_autocast_is_off_by_default_and_bf16_runs_on_cpu(pipe, density):
    assert VaeDecodedDensity(density, pipe.vae).autocast is None
    assert latent_guidance(SafeGuidance(density, 1.0), pipe.vae).density.autocast is None
    assert make_guidance("multi", clip_model=density.clip_model, tokenizer=_tok(),
                         vae=pipe.vae).density.autocast is None  # fmt: skip
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    fp32 = VaeDecodedDensity(density, pipe.vae)
    bf16 = VaeDecodedDensity(density, pipe.vae, autocast=torch.bfloat16)
    with torch.no_grad():
        p32, p16 = fp32.prob(z), bf16.prob(z)
    assert p16.dtype == torch.float32
    torch.testing.assert_close(p16, p32, rtol=0, atol=0.05)
    grad = bf16.grad_log_prob(z)
    assert grad.dtype == z.dtype and torch.isfinite(grad).all()
    with pytest.raises(ValueError, match="autocast must be None"):
        VaeDecodedDensity(density, pipe.vae, autocast="fp16")


def _tok():
    return tiny_clip(seed=0)[1]


def test_pooled_decode(pipe):
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        pooled = VaeDecoder(pipe.vae, latent_pool=2)(z)
        assert torch.equal(pooled, VaeDecoder(pipe.vae)(F.avg_pool2d(z, 2)))
    assert pooled.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="latent_pool must be an integer >= 1"):
        VaeDecoder(pipe.vae, latent_pool=0)
    with pytest.raises(ValueError, match="must divide the latent size"):
        VaeDecoder(pipe.vae, latent_pool=3)(z)


def test_clip_preprocess_buffers_equal_the_constants(density):
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(5)) * 2 - 1
    size = density.image_size
    assert torch.equal(
        clip_preprocess(x, size, density._mean, density._std),
        clip_preprocess(x, size, density.image_mean, density.image_std),
    )
    assert clip_preprocess(x.to(torch.bfloat16), size).dtype == torch.float32


# --------------------------------------------------------------------------- DPM-Solver++(2M)
def test_dpm_solver_matches_diffusers_pipeline_bit_for_bit(components, pipe, density):
    scheduler = DPMSolverMultistepScheduler.from_config(
        components["scheduler"].config, timestep_spacing="linspace"
    )
    ref = StableDiffusionPipeline(
        **{**components, "scheduler": scheduler},
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=5, height=SIZE, width=SIZE, output_type="latent")
    expected = ref(
        ["a cat", "the violence"], generator=torch.Generator().manual_seed(0), **kwargs
    ).images
    ours = run(pipe, steps=5, solver="dpm++2m").images
    assert torch.equal(ours, expected)
    never = run(pipe, SafeGuidance(density, 10.0, threshold=1.0), steps=5, solver="dpm++2m")
    assert torch.equal(never.images, expected)
    safe = run(pipe, SafeGuidance(density, 10.0), steps=5, solver="dpm++2m", record=True)
    assert safe.corrected.all() and not torch.equal(safe.images, expected)


def test_solver_errors(pipe):
    with pytest.raises(ValueError, match="solver must be one of"):
        run(pipe, solver="euler")
    with pytest.raises(ValueError, match="eta must be 0 with solver"):
        run(pipe, solver="dpm++2m", eta=0.5)


def test_eps_model_device_timesteps_change_nothing(pipe):
    embeds = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(6))
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        cached = pipe.eps_model(embeds, 7.5, timesteps=[801, 401, 1])
        fresh = pipe.eps_model(embeds, 7.5)
        assert torch.equal(cached(z, 401), fresh(z, 401))
        assert torch.equal(cached(z, 600), fresh(z, 600))  # not in the list: built on the fly


# --------------------------------------------------------------------------- the benchmark
def test_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("sd_overhead", ROOT / "benchmarks/sd_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    argv = ["--resolution", "32", "--steps", "2", "--repeats", "1", "--in-process", "--json",
            str(out), "--modes", "plain", "safe-none", "safe-all-taesd", "sld-medium"]  # fmt: skip
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in text and "| safe-all-taesd | 2 |" in text
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["rows"]] == ["plain", "safe-none", "safe-all-taesd",
                                                   "sld-medium"]  # fmt: skip
    assert all(r["seconds_per_image"] > 0 for r in result["rows"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])


@pytest.mark.parametrize("reduction", ["mean", "matching"])
def test_every_sample_corrected_fuses_check_and_gradient(pipe, reduction):
    """threshold=None: one decode and one CLIP encoding per step serve the check and the
    gradient; the images equal the two-pass path (a threshold every sample passes)."""
    clip_model, tokenizer = tiny_clip(seed=0)
    dens = CLIPConceptDensity(clip_model, tokenizer, ["violence", "nudity"], reduction=reduction)
    calls = []
    hook = pipe.vae.decoder.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        kw = dict(num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="np")
        fused = pipe(
            "a cat",
            guidance=SafeGuidance(dens, 5.0),
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
        n_fused = len(calls)
        calls.clear()
        two = pipe(
            "a cat",
            guidance=SafeGuidance(dens, 5.0, threshold=dens.prob_range[0]),
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
        n_two = len(calls)
    finally:
        hook.remove()
    assert n_fused == STEPS + 1 and n_two == 2 * STEPS + 1  # (+1: the final image)
    assert (fused.images == two.images).all()
