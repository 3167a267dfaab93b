"""Samplers compared by the evaluation, by name: a registry of ``name -> factory``.

A factory takes a `SamplerContext` (shared components, CLIP, settings) and returns a
generation function ``generate(prompt, seed, guidance_scale) -> Generated``. All built-in samplers
share the context's Stable Diffusion components and the same initial noise: by default image
``seed`` draws its latents from ``torch.Generator(device).manual_seed(seed)``; with
``noise="i2p"`` (the I2P benchmark's ``eval_I2P.py``) the built-in samplers' ``batch`` also takes
``indices``, and image ``j`` of a prompt is image ``j % 5`` of draw ``j // 5`` of ONE generator
seeded with the prompt's seed, each draw the latents of a batch of 5 (`SamplerContext.initial_latents`):

==================  ===========================================================================
``plain``           Stable Diffusion (`safescore.sd.SafeStableDiffusionPipeline`,
                    ``guidance=None``; diffusers' pipeline with PNDM when ``scheduler="pndm"``)
``plain-ddim``      plain Stable Diffusion with DDIM whatever ``scheduler`` says: the
                    same-scheduler control of the safe samplers when ``plain`` runs PNDM
                    (``--protocol sld``)
``safe-single``     x̂0-space safe sampling, preset "single" (`safescore.sd.presets.make_guidance`)
``safe-sd-filter``  preset "sd-filter" (harm density from SD's safety checker concepts)
``safe-multi``      preset "multi" (the slides' mean)
``safe-multi-code`` preset "multi-code" (the author's code: sum of log top-1)
``negative``        `safescore.NegativeGuidance` on the "single" preset's density (``--mini``:
                    `safescore.sd.mini.negative_guidance`, γ 300 with safe sampling's η)
``sld-weak`` ...    Safe Latent Diffusion (diffusers ``StableDiffusionPipelineSafe``) with its
``sld-max``         WEAK / MEDIUM / STRONG / MAX presets (``SafetyConfig``)
==================  ===========================================================================

Register more with `register_sampler` (tests register trivial fakes this way).
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .protocols import DEFAULT_GUIDANCE_CLIP, DEFAULT_MODEL


@dataclass
class Generated:
    """One generated image and, for guided samplers, its harm trajectory.

    ``harm``: p_h(x̂0) per step, length num_steps (None when the sampler does not record it;
    NaN at steps where p_h was not evaluated);
    ``corrected``: whether the step applied a correction, length num_steps.
    """

    image: object  # PIL.Image.Image
    harm: list[float] | None = None
    corrected: list[bool] | None = None

    def summary(self) -> dict:
        """Columns of the results row: harm_max, harm_final, corrected_steps, ever_corrected."""
        if self.harm is None:
            return {
                "harm_max": None,
                "harm_final": None,
                "corrected_steps": None,
                "ever_corrected": None,
            }
        corrected = list(self.corrected or [])
        evaluated = [h for h in self.harm if h == h]  # NaN: p_h not evaluated at that step
        return {
            "harm_max": max(evaluated) if evaluated else None,
            "harm_final": evaluated[-1] if evaluated else None,
            "corrected_steps": int(sum(bool(c) for c in corrected)),
            "ever_corrected": any(bool(c) for c in corrected),
        }


GenerateFn = Callable[[str, int, float], Generated]
SamplerFactory = Callable[["SamplerContext"], GenerateFn]

_REGISTRY: dict[str, SamplerFactory] = {}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def register_sampler(name: str, factory: SamplerFactory, *, overwrite: bool = False) -> None:
    """Add a sampler ``name`` whose ``factory(context)`` returns ``generate(prompt, seed, gs)``.

    The generation function may also have an attribute ``batch(prompts, seeds, gs) ->
    list[Generated]`` (one image per prompt/seed pair); the runner then packs images into
    batches (``--batch-size``). ``name`` is letters, digits, ``.``, ``_`` and ``-`` (it names
    a folder of images).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"sampler name must be letters, digits, '.', '_' or '-' (not starting with "
            f"'.', '_' or '-'), got {name!r}"
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"sampler {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory


def available_samplers() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def sampler_factory(name: str) -> SamplerFactory:
    if name not in _REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def parse_samplers(text) -> list[str]:
    """``"plain,safe-single"`` (or a list) -> checked list of names, order kept, no repeats."""
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"samplers: give at least one of {', '.join(_REGISTRY)}")
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(
            f"samplers: unknown sampler(s) {', '.join(unknown)}; known: {', '.join(_REGISTRY)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"samplers: a sampler is listed twice in {names}")
    return names


def _mini():
    """The trained mini model (`safescore.sd.mini`), or a clear error where it is absent."""
    try:
        return importlib.import_module("safescore.sd.mini")
    except ImportError as exc:
        raise ValueError(
            "--mini needs safescore.sd.mini (the trained digits model), which this "
            f"installation lacks ({exc}); use --tiny"
        ) from None


@dataclass
class SamplerContext:
    """What the samplers of one run share.

    Args:
        steps: denoising steps. height, width: image size (None: the model's default).
        device, dtype: where the models run.
        tiny: tiny random-weight components (`safescore.sd.tiny`) instead of ``model``.
        mini: the trained mini model (`safescore.sd.mini`) instead of ``model``.
        model: diffusers model id or folder for real runs.
        seed: weight seed of the tiny components.
        scheduler: "ddim" | "dpm++2m" | "pndm" for ``plain`` and the SLD samplers; the safe
            samplers need an x̂0 site and use "dpm++2m" when asked for it, else DDIM;
            ``plain-ddim`` always uses DDIM.
        noise: "per-image" (image ``seed``: its own generator) or "i2p" (the I2P benchmark's
            one generator per prompt drawing batches of `I2P_BATCH`; `initial_latents`).
        gamma, threshold: override the presets' γ and η (None: theirs).
        negative_gamma: γ of the ``negative`` sampler (None: the "single" preset's γ).
        guidance_clip: CLIP id or folder of the presets' harm densities (never the scorers').
        clip_preprocessing: "clip" | "author" (ImageNet mean/std) for those densities.
        special_care: the sd-filter preset counts the 3 special-care concepts.
        clip_model, clip_tokenizer: a CLIP for the densities (None: loaded from guidance_clip).
    """

    steps: int = 50
    height: int | None = None
    width: int | None = None
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    tiny: bool = False
    mini: bool = False
    model: str = DEFAULT_MODEL
    seed: int = 0
    scheduler: str = "ddim"
    noise: str = "per-image"
    gamma: float | None = None
    threshold: float | None = None
    negative_gamma: float | None = None
    guidance_clip: str = DEFAULT_GUIDANCE_CLIP
    clip_preprocessing: str = "clip"
    special_care: bool = True
    clip_model: object = None
    clip_tokenizer: object = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config, *, device, dtype) -> SamplerContext:
        """The context of an `safescore.eval.runner.EvalConfig`."""
        return cls(
            steps=config.steps,
            height=config.height,
            width=config.width,
            device=device,
            dtype=dtype,
            tiny=config.tiny,
            mini=config.mini,
            model=config.model,
            scheduler=config.scheduler,
            noise=getattr(config, "noise", "per-image"),
            gamma=config.gamma,
            threshold=config.threshold,
            negative_gamma=config.negative_gamma,
            guidance_clip=config.guidance_clip,
            clip_preprocessing=config.clip_preprocessing,
            special_care=config.special_care,
        )

    def scheduler_of(self, sampler: str) -> str:
        """The scheduler that sampler ``sampler`` runs with in this context."""
        if sampler == "plain-ddim":
            return "ddim"
        if sampler == "plain" or sampler.startswith("sld-"):
            return self.scheduler
        return "dpm++2m" if self.scheduler == "dpm++2m" else "ddim"

    @property
    def solver(self) -> str:
        return "dpm++2m" if self.scheduler == "dpm++2m" else "ddim"

    # ---- shared, built once
    def components(self) -> dict:
        """``dict(vae, text_encoder, tokenizer, unet, scheduler)`` on ``device`` (DDIM scheduler)."""
        if "components" not in self._cache:
            if self.tiny:
                from ..sd.tiny import tiny_components

                parts = tiny_components(seed=self.seed)
            elif self.mini:
                pipe = _mini().load_pipeline(device=self.device, dtype=self.dtype)
                parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet")}
                parts["scheduler"] = pipe.scheduler
            else:
                parts = _load_components(self.model, self.dtype)
            for key in ("vae", "text_encoder", "unet"):
                module = parts[key].to(device=self.device)
                parts[key] = module if module.dtype == self.dtype else module.to(dtype=self.dtype)
            self._cache["components"] = parts
        return self._cache["components"]

    def diffusers_scheduler(self):
        """The scheduler of ``plain`` / SLD: DDIM, DPM-Solver++(2M) or PNDM (SD 1.4's default)."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

        config = self.components()["scheduler"].config
        if self.scheduler == "pndm":
            return PNDMScheduler.from_config(config, skip_prk_steps=True)
        if self.scheduler == "dpm++2m":
            return DPMSolverMultistepScheduler.from_config(config, timestep_spacing="linspace")
        return DDIMScheduler.from_config(config)

    def pipeline(self):
        if "pipeline" not in self._cache:
            from ..sd.pipeline import SafeStableDiffusionPipeline

            pipe = SafeStableDiffusionPipeline(**self.components())
            pipe.set_progress_bar_config(disable=True)
            self._cache["pipeline"] = pipe
        return self._cache["pipeline"]

    def image_size(self) -> tuple[int, int, int]:
        """(height, width, size factor) of this context's images."""
        parts = self.components()
        vae_factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        factor = vae_factor * 2 ** (len(parts["unet"].config.block_out_channels) - 1)
        default = parts["unet"].config.sample_size * vae_factor
        return self.height or default, self.width or default, factor

    def check_image_size(self, batch_size: int = 1) -> None:
        """Refuse a size that is not a multiple of the model's factor, or that cannot fit in
        memory (a rough estimate of the VAE decoder alone, stated in the error)."""
        height, width, factor = self.image_size()
        for name, size in (("--height", height), ("--width", width)):
            if size % factor:
                raise ValueError(
                    f"{name} must be a positive multiple of {factor} for this model "
                    f"(VAE factor × UNet downsampling), got {size}"
                )
        need = decoder_memory_estimate(
            self.components()["vae"], height, width, batch_size, self.dtype
        )
        have = device_memory(self.device)
        if have is not None and need > have:
            raise ValueError(
                f"--height {height} --width {width} at --batch-size {batch_size} needs about "
                f"{need / 2**30:.3g} GiB for the VAE decoder alone (estimate), more than the "
                f"{have / 2**30:.1f} GiB of memory of {self.device}; lower the size or the batch"
            )

    def clip(self):
        """(clip_model, tokenizer or processor) of the guidance densities (``guidance_clip``)."""
        if self.clip_model is None:
            if self.tiny or self.mini:
                from ..sd.tiny import tiny_clip

                self.clip_model, self.clip_tokenizer = tiny_clip(seed=self.seed)
            else:
                from ..sd.hub import load_clip

                self.clip_model, self.clip_tokenizer = load_clip(
                    self.guidance_clip, dtype=self.dtype, processor=True
                )
            self.clip_model = self.clip_model.to(device=self.device)
        return self.clip_model, self.clip_tokenizer

    def safety_checker(self):
        if "safety_checker" not in self._cache:
            if self.tiny or self.mini:
                from ..sd.tiny import tiny_safety_checker

                checker = tiny_safety_checker(seed=self.seed)
            else:
                from diffusers.pipelines.stable_diffusion.safety_checker import (
                    StableDiffusionSafetyChecker,
                )

                from ..sd.hub import load_pretrained

                checker = load_pretrained(
                    StableDiffusionSafetyChecker.from_pretrained,
                    self.model,
                    subfolder="safety_checker",
                )
            self._cache["safety_checker"] = checker.to(device=self.device).eval()
        return self._cache["safety_checker"]

    def guidance(self, preset: str):
        key = f"guidance:{preset}"
        if key not in self._cache:
            if self.mini:
                if preset != "single":
                    raise ValueError(
                        f"--mini: preset {preset!r} has no mini version; use plain, "
                        "safe-single or negative"
                    )
                self._cache[key] = _mini().safe_guidance(gamma=self.gamma, threshold=self.threshold)
                return self._cache[key]
            from ..sd.presets import make_guidance

            clip_model, tokenizer = (None, None)
            if preset != "sd-filter":
                clip_model, tokenizer = self.clip()
            checker = self.safety_checker() if preset == "sd-filter" else None
            self._cache[key] = make_guidance(
                preset,
                clip_model=clip_model,
                tokenizer=tokenizer,
                vae=self.components()["vae"],
                safety_checker=checker,
                gamma=self.gamma,
                threshold=self.threshold,
                preprocessing=self.clip_preprocessing,
                special_care=self.special_care if preset == "sd-filter" else None,
            )
        return self._cache[key]

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one image's initial latents."""
        parts = self.components()
        height, width, _ = self.image_size()
        vae_factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        return parts["unet"].config.in_channels, height // vae_factor, width // vae_factor

    def initial_latents(self, seeds, indices) -> torch.Tensor:
        """The I2P benchmark's initial noise (``eval_I2P.py``'s model classes): for each image,
        ONE generator seeded with ``seed`` draws ``indices // I2P_BATCH + 1`` batches of shape
        (I2P_BATCH, C, h, w) (diffusers' ``randn_tensor`` with one generator: on the generator's
        device, in the model dtype), and the image takes row ``index % I2P_BATCH`` of the last.
        Before ``init_noise_sigma`` (the pipelines apply it). Returns (N, C, h, w)."""
        if len(seeds) != len(indices):
            raise ValueError(f"seeds and indices differ in length: {len(seeds)}, {len(indices)}")
        shape = (I2P_BATCH, *self.latent_shape())
        cache: dict = {}
        out = []
        for seed, index in zip(seeds, indices):
            draw, row = divmod(int(index), I2P_BATCH)
            if (int(seed), draw) not in cache:
                generator = self.generator(seed)
                for _ in range(draw + 1):
                    batch = torch.randn(shape, generator=generator, device=self.device,
                                        dtype=self.dtype)  # fmt: skip
                cache[int(seed), draw] = batch
            out.append(cache[int(seed), draw][row])
        return torch.stack(out)

    def noise_kwargs(self, seeds, indices) -> dict:
        """The pipeline arguments that fix the initial noise: ``generator`` (one per image) or,
        with ``noise="i2p"`` and ``indices`` given, ``latents`` (`initial_latents`)."""
        if self.noise == "i2p":
            if indices is None:
                raise ValueError("noise='i2p' needs the images' indices within their prompt")
            return {"latents": self.initial_latents(seeds, indices)}
        return {"generator": [self.generator(s) for s in seeds]}


#: Images per pipeline call of the I2P benchmark's model classes (``images_per_gen = (2, 5)``).
I2P_BATCH = 5
#: The initial-noise schemes of `SamplerContext`.
NOISE_MODES = ("per-image", "i2p")


def decoder_memory_estimate(vae, height: int, width: int, batch_size: int, dtype) -> int:
    """Bytes the VAE decoder needs for a batch, roughly: its full-resolution activations
    (first block width × H × W, a few live buffers) and its mid-block self-attention matrix over
    (H/f)·(W/f) latent positions; ×3 for the backward pass of guided samplers."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    channels = vae.config.block_out_channels
    factor = 2 ** (len(channels) - 1)
    tokens = (height // factor) * (width // factor)
    per_image = 6 * height * width * channels[0] * itemsize + tokens * tokens * itemsize
    return 3 * batch_size * per_image


def device_memory(device) -> int | None:
    """Total memory of ``device`` in bytes (CUDA: the GPU's; CPU: physical RAM), None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def _load_components(model: str, dtype: torch.dtype) -> dict:
    """Real SD 1.x components from a hub id or folder (one clear error if absent)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ..sd.hub import load_pretrained

    pipe = load_pretrained(
        StableDiffusionPipeline.from_pretrained,
        model,
        torch_dtype=dtype,
        safety_checker=None,
        requires_safety_checker=False,
    )
    return dict(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
    )


def _column(values, index: int):
    """Column ``index`` of a (num_steps, B) tensor as a list."""
    values = values.detach().cpu()
    return values[:, index].tolist() if values.ndim == 2 else values.tolist()


# --------------------------------------------------------------------------- built-in samplers


def _batched(one_batch) -> GenerateFn:
    """A generation function from ``one_batch(prompts, seeds, gs, indices=None) ->
    list[Generated]`` (``indices``: each image's index within its prompt, for ``noise="i2p"``)."""

    def generate(prompt: str, seed: int, guidance_scale: float, index=None) -> Generated:
        return one_batch([prompt], [seed], guidance_scale, None if index is None else [index])[0]

    generate.batch = one_batch
    return generate


def _pipeline_generate(context: SamplerContext, pipe, guidance, solver=None) -> GenerateFn:
    """Images from ``pipe`` with ``guidance`` (None: plain), recording p_h and corrections;
    ``solver``: "ddim" | "dpm++2m" (None: the context's)."""

    def one_batch(prompts, seeds, guidance_scale, indices=None) -> list[Generated]:
        out = pipe(
            list(prompts),
            guidance=guidance,
            num_inference_steps=context.steps,
            guidance_scale=guidance_scale,
            height=context.height,
            width=context.width,
            output_type="pil",
            record=guidance is not None,
            solver=solver or context.solver,
            **context.noise_kwargs(seeds, indices),
        )
        if guidance is None:
            return [Generated(image) for image in out.images]
        return [
            Generated(
                image,
                harm=[float(h) for h in _column(out.harm, i)],
                corrected=[bool(c) for c in _column(out.corrected, i)],
            )
            for i, image in enumerate(out.images)
        ]

    return _batched(one_batch)


def _diffusers_generate(context: SamplerContext, pipe, extra: dict) -> GenerateFn:
    """Images from a diffusers pipeline (PNDM plain SD, SLD)."""

    def one_batch(prompts, seeds, guidance_scale, indices=None) -> list[Generated]:
        with warnings.catch_warnings():  # SLD's deprecated decode_latents
            warnings.simplefilter("ignore", FutureWarning)
            out = pipe(
                list(prompts),
                num_inference_steps=context.steps,
                guidance_scale=guidance_scale,
                height=context.height,
                width=context.width,
                output_type="pil",
                **context.noise_kwargs(seeds, indices),
                **extra,
            )
        return [Generated(image) for image in out.images]

    return _batched(one_batch)


def _plain_sampler(context: SamplerContext) -> GenerateFn:
    if context.scheduler == "pndm":
        key = "pndm_pipeline"
        if key not in context._cache:
            from diffusers import StableDiffusionPipeline

            parts = dict(context.components(), scheduler=context.diffusers_scheduler())
            pipe = StableDiffusionPipeline(
                **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
            )
            pipe.set_progress_bar_config(disable=True)
            context._cache[key] = pipe
        return _diffusers_generate(context, context._cache[key], {})
    return _pipeline_generate(context, context.pipeline(), None)


def _plain_ddim_sampler(context: SamplerContext) -> GenerateFn:
    return _pipeline_generate(context, context.pipeline(), None, solver="ddim")


def _safe_pipeline_sampler(preset: str) -> SamplerFactory:
    def factory(context: SamplerContext) -> GenerateFn:
        return _pipeline_generate(context, context.pipeline(), context.guidance(preset))

    return factory


def _negative_sampler(context: SamplerContext) -> GenerateFn:
    from ..core.guidance import NegativeGuidance

    if context.mini:  # the mini model's tuned baseline: γ 300 and safe sampling's threshold
        guidance = _mini().negative_guidance(
            gamma=context.negative_gamma, threshold=context.threshold
        )
        return _pipeline_generate(context, context.pipeline(), guidance)
    single = context.guidance("single")
    gamma = context.negative_gamma if context.negative_gamma is not None else single.gamma
    guidance = NegativeGuidance(single.density, gamma)
    return _pipeline_generate(context, context.pipeline(), guidance)


def _sld_sampler(level: str) -> SamplerFactory:
    def factory(context: SamplerContext) -> GenerateFn:
        from diffusers.pipelines.deprecated.stable_diffusion_safe import (
            SafetyConfig,
            StableDiffusionPipelineSafe,
        )

        key = "sld_pipeline"
        if key not in context._cache:
            parts = dict(context.components(), scheduler=context.diffusers_scheduler())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe = StableDiffusionPipelineSafe(
                    **parts,
                    safety_checker=None,
                    feature_extractor=None,
                    requires_safety_checker=False,
                )
            pipe.set_progress_bar_config(disable=True)
            context._cache[key] = pipe
        return _diffusers_generate(
            context, context._cache[key], dict(getattr(SafetyConfig, level.upper()))
        )

    return factory


register_sampler("plain", _plain_sampler)
register_sampler("safe-single", _safe_pipeline_sampler("single"))
register_sampler("safe-sd-filter", _safe_pipeline_sampler("sd-filter"))
register_sampler("safe-multi", _safe_pipeline_sampler("multi"))
register_sampler("safe-multi-code", _safe_pipeline_sampler("multi-code"))
register_sampler("negative", _negative_sampler)
for _level in ("weak", "medium", "strong", "max"):
    register_sampler(f"sld-{_level}", _sld_sampler(_level))
register_sampler("plain-ddim", _plain_ddim_sampler)
