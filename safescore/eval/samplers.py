"""Samplers compared by the evaluation, by name: a registry of ``name -> factory``.

A factory takes a `SamplerContext` (shared components, CLIP, settings) and returns a
generation function ``generate(prompt, seed, guidance_scale) -> Generated``. All built-in samplers
share the context's Stable Diffusion components and draw the initial latents from
``torch.Generator(device).manual_seed(seed)``, so they compare on the same noise:

==================  ===========================================================================
``plain``           Stable Diffusion with DDIM (`safescore.sd.SafeStableDiffusionPipeline`,
                    ``guidance=None``)
``safe-single``     x̂0-space safe sampling, preset "single" (`safescore.sd.presets.make_guidance`)
``safe-sd-filter``  preset "sd-filter" (harm density from SD's safety checker concepts)
``safe-multi``      preset "multi"
``negative``        `safescore.NegativeGuidance` on the "single" preset's density
``sld-weak`` ...    Safe Latent Diffusion (diffusers ``StableDiffusionPipelineSafe``) with its
``sld-max``         WEAK / MEDIUM / STRONG / MAX presets (``SafetyConfig``)
==================  ===========================================================================

Register more with `register_sampler` (tests register trivial fakes this way).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


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


def register_sampler(name: str, factory: SamplerFactory, *, overwrite: bool = False) -> None:
    """Add a sampler ``name`` whose ``factory(context)`` returns ``generate(prompt, seed, gs)``."""
    if not isinstance(name, str) or not name or "," in name or "|" in name:
        raise ValueError(
            f"sampler name must be a non-empty string without ',' or '|', got {name!r}"
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"sampler {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory


def available_samplers() -> tuple[str, ...]:
    return tuple(_REGISTRY)


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


@dataclass
class SamplerContext:
    """What the samplers of one run share.

    Args:
        steps: DDIM steps. height, width: image size (None: the model's default).
        device, dtype: where the models run.
        tiny: use tiny random-weight components (`safescore.sd.tiny`) instead of ``model``.
        model: diffusers model id or folder for real runs.
        seed: weight seed of the tiny components.
        negative_gamma: γ of the ``negative`` sampler (None: the "single" preset's γ).
        clip_model, clip_tokenizer: CLIP for the safe presets' densities (None: built on demand).
    """

    steps: int = 50
    height: int | None = None
    width: int | None = None
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    tiny: bool = False
    model: str = "CompVis/stable-diffusion-v1-4"
    seed: int = 0
    negative_gamma: float | None = None
    clip_model: object = None
    clip_tokenizer: object = None
    _cache: dict = field(default_factory=dict, repr=False)

    # ---- shared, built once
    def components(self) -> dict:
        """``dict(vae, text_encoder, tokenizer, unet, scheduler)`` on ``device``."""
        if "components" not in self._cache:
            if self.tiny:
                from ..sd.tiny import tiny_components

                parts = tiny_components(seed=self.seed)
            else:
                parts = _load_components(self.model, self.dtype)
            for key in ("vae", "text_encoder", "unet"):
                module = parts[key].to(device=self.device)
                parts[key] = module if module.dtype == self.dtype else module.to(dtype=self.dtype)
            self._cache["components"] = parts
        return self._cache["components"]

    def pipeline(self):
        if "pipeline" not in self._cache:
            from ..sd.pipeline import SafeStableDiffusionPipeline

            pipe = SafeStableDiffusionPipeline(**self.components())
            pipe.set_progress_bar_config(disable=True)
            self._cache["pipeline"] = pipe
        return self._cache["pipeline"]

    def clip(self):
        """(clip_model, tokenizer) for the guidance densities."""
        if self.clip_model is None:
            if self.tiny:
                from ..sd.tiny import tiny_clip

                self.clip_model, self.clip_tokenizer = tiny_clip(seed=self.seed)
            else:
                raise ValueError("the safe samplers need a CLIP model; pass clip_model=")
            self.clip_model = self.clip_model.to(device=self.device)
        return self.clip_model, self.clip_tokenizer

    def safety_checker(self):
        if "safety_checker" not in self._cache:
            if self.tiny:
                from ..sd.tiny import tiny_safety_checker

                checker = tiny_safety_checker(seed=self.seed)
            else:
                from diffusers.pipelines.stable_diffusion.safety_checker import (
                    StableDiffusionSafetyChecker,
                )

                checker = StableDiffusionSafetyChecker.from_pretrained(
                    self.model, subfolder="safety_checker"
                )
            self._cache["safety_checker"] = checker.to(device=self.device).eval()
        return self._cache["safety_checker"]

    def guidance(self, preset: str):
        key = f"guidance:{preset}"
        if key not in self._cache:
            from ..sd.presets import make_guidance

            clip_model, tokenizer = self.clip()
            checker = self.safety_checker() if preset == "sd-filter" else None
            self._cache[key] = make_guidance(
                preset,
                clip_model=clip_model,
                tokenizer=tokenizer,
                vae=self.components()["vae"],
                safety_checker=checker,
            )
        return self._cache[key]

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))


def _load_components(model: str, dtype: torch.dtype) -> dict:
    """Real SD 1.x components from a hub id or folder, with a DDIM scheduler."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
    )
    return dict(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
    )


def _to_list(values, index: int = 0):
    """A (num_steps, B) tensor/array/list -> the list for batch element ``index``."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        return values[:, index].tolist() if values.ndim == 2 else values.tolist()
    return [v[index] if hasattr(v, "__len__") else v for v in values]


# --------------------------------------------------------------------------- built-in samplers


def _pipeline_generate(context: SamplerContext, pipe, guidance) -> GenerateFn:
    """One image from ``pipe`` with ``guidance`` (None: plain), recording p_h and corrections."""

    def generate(prompt: str, seed: int, guidance_scale: float) -> Generated:
        out = pipe(
            prompt,
            guidance=guidance,
            num_inference_steps=context.steps,
            guidance_scale=guidance_scale,
            generator=context.generator(seed),
            height=context.height,
            width=context.width,
            output_type="pil",
            record=guidance is not None,
        )
        if guidance is None:
            return Generated(out.images[0])
        harm = [float(h) for h in _to_list(out.harm)]
        corrected = [bool(c) for c in _to_list(out.corrected)]
        return Generated(out.images[0], harm=harm, corrected=corrected)

    return generate


def _safe_pipeline_sampler(preset: str | None) -> SamplerFactory:
    def factory(context: SamplerContext) -> GenerateFn:
        pipe = context.pipeline()
        guidance = context.guidance(preset) if preset else None
        return _pipeline_generate(context, pipe, guidance)

    return factory


def _negative_sampler(context: SamplerContext) -> GenerateFn:
    from ..core.guidance import NegativeGuidance

    single = context.guidance("single")
    gamma = context.negative_gamma if context.negative_gamma is not None else single.gamma
    guidance = NegativeGuidance(single.density, gamma)
    return _pipeline_generate(context, context.pipeline(), guidance)


def _sld_sampler(level: str) -> SamplerFactory:
    def factory(context: SamplerContext) -> GenerateFn:
        key = "sld_pipeline"
        if key not in context._cache:
            from diffusers.pipelines.deprecated.stable_diffusion_safe import (
                StableDiffusionPipelineSafe,
            )

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe = StableDiffusionPipelineSafe(
                    **context.components(),
                    safety_checker=None,
                    feature_extractor=None,
                    requires_safety_checker=False,
                )
            pipe.set_progress_bar_config(disable=True)
            context._cache[key] = pipe
        pipe = context._cache[key]
        from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

        preset = dict(getattr(SafetyConfig, level.upper()))

        def generate(prompt: str, seed: int, guidance_scale: float) -> Generated:
            with warnings.catch_warnings():  # SLD's deprecated decode_latents
                warnings.simplefilter("ignore", FutureWarning)
                out = pipe(
                    prompt,
                    num_inference_steps=context.steps,
                    guidance_scale=guidance_scale,
                    generator=context.generator(seed),
                    height=context.height,
                    width=context.width,
                    output_type="pil",
                    **preset,
                )
            return Generated(out.images[0])

        return generate

    return factory


register_sampler("plain", _safe_pipeline_sampler(None))
register_sampler("safe-single", _safe_pipeline_sampler("single"))
register_sampler("safe-sd-filter", _safe_pipeline_sampler("sd-filter"))
register_sampler("safe-multi", _safe_pipeline_sampler("multi"))
register_sampler("negative", _negative_sampler)
for _level in ("weak", "medium", "strong", "max"):
    register_sampler(f"sld-{_level}", _sld_sampler(_level))
