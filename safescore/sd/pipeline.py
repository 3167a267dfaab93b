"""Stable Diffusion sampled by `safescore.ddim_sample` with safescore's guidance objects.

`SafeStableDiffusionPipeline` is diffusers' ``StableDiffusionPipeline`` (same prompt
encoding, same initial latent draw, same VAE decoding and post-processing) whose denoising loop is
replaced by safescore's one DDIM loop:

    eps_model(z_t, t) = ε_uncond + w (ε_text - ε_uncond)          (classifier-free guidance)
    x̂0 = (z_t - sqrt(1-ᾱ_t) ε) / sqrt(ᾱ_t)                         (latent Tweedie, DDIM eq. 9)
    x̂0 <- x̂0 - γ ∇_{x̂0} log p_h(decode(x̂0 / s))   if p_h >= η     (SafeGuidance, CDTC)
    z_prev = sqrt(ᾱ_prev) x̂0 + sqrt(1-ᾱ_prev-σ²) ε + σ z           (DDIM eq. 12)

With ``guidance=None`` (or a threshold no sample reaches) the images equal diffusers'
``StableDiffusionPipeline`` with the same components and generator, bit for bit on CPU float32.
``solver="dpm++2m"`` samples with `safescore.dpm_solver_sample` (DPM-Solver++(2M), the same
x̂0 guidance site) instead; without guidance it equals diffusers' pipeline with
``DPMSolverMultistepScheduler.from_config(scheduler.config, timestep_spacing="linspace")``.

The loop makes no host synchronisation of its own (the UNet's timesteps are put on the device
once per call); what remains per step is in `safescore.ddim_sample` and the guidance.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from ..core.sampling import ddim_sample, dpm_solver_sample, dpm_solver_timesteps
from ..core.schedules import NoiseSchedule
from .hub import load_pretrained
from .latent import VaeDecodedDensity, VaeDecoder, latent_guidance

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
SOLVERS = ("ddim", "dpm++2m")


@dataclass
class SafeStableDiffusionOutput:
    """Output of `SafeStableDiffusionPipeline`.

    images: list of PIL images ("pil"), array (N, H, W, 3) in [0, 1] ("np"), tensor
    (N, 3, H, W) ("pt") or latents (N, C, h, w) ("latent"); N = prompts × num_images_per_prompt.
    With ``record=True``: harm (steps, N) float64 (p_h of x̂0 before correction, NaN when not
    evaluated), corrected (steps, N) bool, timesteps (steps,), x0_latents (steps, N, C, h, w) the
    Tweedie x̂0's before guidance; with ``record_previews=True`` also x0_previews and
    x0_previews_guided (steps, N, H, W, 3) in [0, 1], the decoded x̂0 before / after guidance.
    random_weights: True when the pipeline was built from random-weight components.
    """

    images: object
    nsfw_content_detected: list | None = None
    harm: torch.Tensor | None = None
    corrected: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    x0_latents: torch.Tensor | None = None
    x0_previews: np.ndarray | None = None
    x0_previews_guided: np.ndarray | None = None
    random_weights: bool = False
    seconds: float = 0.0

    @property
    def ever_corrected(self) -> torch.Tensor:
        """Bool (N,): the images CDTC corrected at least once (needs ``record=True``)."""
        if self.corrected is None:
            raise ValueError("ever_corrected needs a result generated with record=True")
        return self.corrected.any(dim=0)


class SafeStableDiffusionPipeline(StableDiffusionPipeline):
    """Stable Diffusion 1.x/2.x (ε-prediction) with safe sampling in latent x̂0 space.

    Built from diffusers components like ``StableDiffusionPipeline`` (``vae, text_encoder,
    tokenizer, unet, scheduler``; the scheduler must be a ``DDIMScheduler``) or with
    `from_pretrained`. ``pipe(prompt, guidance=SafeGuidance(density, gamma, threshold))``
    samples with `safescore.ddim_sample`; an image density (on images in [-1, 1], e.g.
    `safescore.densities.CLIPConceptDensity`) is pulled back through the VAE decoder
    automatically. ``random_weights`` is True for the tiny / sd15-shaped random components.
    """

    random_weights = False
    # What ``__call__`` uses when num_inference_steps / guidance_scale are not given (diffusers'
    # defaults; `safescore.sd.mini.load_pipeline` sets the mini model's on its instance).
    default_num_inference_steps = 50
    default_guidance_scale = 7.5

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
    ):
        if not isinstance(scheduler, DDIMScheduler):
            raise TypeError(
                "scheduler must be a diffusers DDIMScheduler (safe sampling uses DDIM), got "
                f"{type(scheduler).__name__}; use DDIMScheduler.from_config(scheduler.config)"
            )
        if scheduler.config.prediction_type != "epsilon":
            raise ValueError(
                "scheduler.config.prediction_type must be 'epsilon', got "
                f"{scheduler.config.prediction_type!r}"
            )
        if scheduler.config.thresholding:
            raise ValueError("scheduler.config.thresholding must be False for safe sampling")
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a Stable Diffusion folder or hub id with a DDIM scheduler from its own config.

        The post-hoc safety checker is not loaded unless ``safety_checker=`` is passed (safe
        sampling is evaluated on unfiltered images). Raises FileNotFoundError ("... not found
        locally; pass a local path or use --tiny") when the weights are absent and the hub can't
        be reached. Keyword arguments go to diffusers (``torch_dtype``, ``variant``, ...).
        """
        name = os.fspath(pretrained_model_name_or_path)
        kwargs.setdefault("safety_checker", None)
        kwargs.setdefault("requires_safety_checker", False)
        if "scheduler" not in kwargs:
            sched_kwargs = {
                k: kwargs[k] for k in ("local_files_only", "revision", "cache_dir") if k in kwargs
            }
            kwargs["scheduler"] = load_pretrained(
                DDIMScheduler.from_pretrained, name, subfolder="scheduler", **sched_kwargs
            )
        parent = super().from_pretrained.__func__
        return load_pretrained(lambda n, **kw: parent(cls, n, **kw), name, **kwargs)

    # ----------------------------------------------------------------- pieces
    @property
    def vae_decoder(self) -> VaeDecoder:
        """``z -> vae.decode(z / scaling_factor)`` (a module; differentiable)."""
        return VaeDecoder(self.vae)

    def decode_latents_to_images(self, latents: torch.Tensor, output_type: str = "np"):
        """Decode latents (N, C, h, w) without gradients and post-process like diffusers."""
        with torch.no_grad():
            images = self.vae_decoder(latents)
        return self.image_processor.postprocess(images, output_type=output_type)

    def _check_call(
        self, *, prompt, negative_prompt, height, width, generator, output_type, n, eta
    ):
        if isinstance(prompt, str):
            batch = 1
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            batch = len(prompt)
        else:
            raise TypeError(
                f"prompt must be a string or a non-empty list of strings, got {prompt!r}"
            )
        if negative_prompt is not None:
            if isinstance(negative_prompt, str) != isinstance(prompt, str):
                raise TypeError("negative_prompt must be of the same type as prompt (str or list)")
            if isinstance(negative_prompt, list) and len(negative_prompt) != batch:
                raise ValueError(
                    f"negative_prompt has {len(negative_prompt)} entries but prompt has {batch}"
                )
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {n!r}")
        factor = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        for name, size in (("height", height), ("width", width)):
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % factor:
                raise ValueError(
                    f"{name} must be a positive multiple of {factor} (VAE factor "
                    f"{self.vae_scale_factor} × UNet downsampling), got {size!r}"
                )
        if isinstance(generator, list):
            if len(generator) != batch * n:
                raise ValueError(
                    f"generator is a list of {len(generator)} generators but prompt × "
                    f"num_images_per_prompt = {batch * n} images are generated"
                )
            if eta > 0:
                raise ValueError("eta > 0 needs a single generator, not a list")
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or a list of them, got {generator!r}"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        return batch

    def eps_model(
        self, prompt_embeds: torch.Tensor, guidance_scale: float, timestep_cond=None, timesteps=None
    ):
        """The latent ε-model with classifier-free guidance, as diffusers' denoising loop.

        ``prompt_embeds`` is ``cat([negative, positive])`` (2N, L, D) when ``guidance_scale > 1``,
        else (N, L, D). Returns ``eps(z_t, t) = ε_u + w (ε_c - ε_u)`` for z_t of shape (N, C, h, w).
        ``timesteps``: the integer timesteps the sampler will ask for; they are copied to the
        device once here, instead of one host-to-device copy (a host sync on CUDA) per step.
        """
        cfg = guidance_scale > 1.0
        device = prompt_embeds.device
        on_device = {}
        if timesteps is not None:
            ts = [int(t) for t in timesteps]
            ts_dev = torch.tensor(ts, dtype=torch.long, device=device)
            on_device = {t: ts_dev[j] for j, t in enumerate(ts)}

        def eps(z_t: torch.Tensor, t: int) -> torch.Tensor:
            t_dev = on_device.get(int(t))
            if t_dev is None:
                t_dev = torch.tensor(int(t), dtype=torch.long, device=z_t.device)
            t = t_dev
            z_in = torch.cat([z_t] * 2) if cfg else z_t
            z_in = self.scheduler.scale_model_input(z_in, t)
            noise_pred = self.unet(
                z_in,
                t,
                encoder_hidden_states=prompt_embeds,
                timestep_cond=timestep_cond,
                return_dict=False,
            )[0]
            if cfg:
                noise_uncond, noise_text = noise_pred.chunk(2)
                noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
            return noise_pred

        return eps

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        guidance=None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        latents: torch.Tensor | None = None,
        record: bool = False,
        record_previews: bool = False,
        progress: bool = False,
        callback=None,
        solver: str = "ddim",
        density_vae=None,
    ) -> SafeStableDiffusionOutput:
        """Generate images; with ``guidance`` the thesis' safe sampler (or a baseline).

        Args:
            prompt: a string or a list of N_p strings.
            guidance: None (plain DDIM), a `safescore.SafeGuidance` (x̂0 space, CDTC) or
                `safescore.NegativeGuidance` (x_t space, through the UNet). Its density acts
                on images in [-1, 1] (pulled back through the VAE here) or already on latents
                (`safescore.sd.latent.VaeDecodedDensity`, e.g. from
                `safescore.sd.presets.make_guidance`).
            num_inference_steps: DDIM steps. guidance_scale: classifier-free guidance w. None
                takes the pipeline's defaults ``default_num_inference_steps`` (50) and
                ``default_guidance_scale`` (7.5, diffusers' default); a pipeline loaded by
                `safescore.sd.mini.load_pipeline` has the settings its model was tuned at.
            negative_prompt: str or list like ``prompt``. generator: a torch.Generator or one per
                image (N_p × num_images_per_prompt). height, width: image size, multiples of the
                VAE factor; default the UNet's sample_size × VAE factor.
            output_type: "pil" | "np" | "pt" | "latent". eta: the DDIM noise η_DDIM in [0, 1].
            latents: initial latents (N, C, h, w) instead of the generator's draw.
            record: keep per-step harm (steps, N) and corrected (steps, N).
            record_previews: also decode the x̂0 of every step (costs one VAE decode per step).
            callback: passed to `safescore.ddim_sample` (a dict per step).
            solver: "ddim" (`safescore.ddim_sample`) or "dpm++2m"
                (`safescore.dpm_solver_sample`, DPM-Solver++(2M), needs ``eta=0``; the same
                x̂0 guidance site, fewer steps for the same quality).
            density_vae: the decoder an image density sees (threshold check and gradient), e.g.
                a cheap ``AutoencoderTiny`` (`safescore.sd.latent.load_tiny_vae`); None =
                the pipeline's VAE. The final image is always decoded by the pipeline's VAE.
                With a density already on latents (``VaeDecodedDensity``, which has its own
                decoder) it is a ValueError. Other density options (autocast, checkpointing,
                pooled decode): build the guidance with `safescore.sd.latent.latent_guidance`.
        Returns:
            `SafeStableDiffusionOutput`.
        """
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        batch = self._check_call(
            prompt=prompt, negative_prompt=negative_prompt, height=height, width=width,
            generator=generator, output_type=output_type, n=num_images_per_prompt, eta=eta,
        )  # fmt: skip
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if (
            isinstance(guidance_scale, bool)
            or not isinstance(guidance_scale, numbers.Real)
            or not math.isfinite(guidance_scale)
        ):
            raise ValueError(
                "guidance_scale must be a finite number (<= 1: no classifier-free guidance), "
                f"got {guidance_scale!r}"
            )
        if solver != "ddim" and eta != 0:
            raise ValueError(f"eta must be 0 with solver={solver!r} (it is deterministic)")
        guidance = self._latent_guidance(guidance, density_vae)
        self._guidance_scale = guidance_scale
        self._guidance_rescale = 0.0
        self._clip_skip = None
        self._cross_attention_kwargs = None
        self._interrupt = False
        device = self._execution_device
        # 1. Prompt embeddings, exactly as diffusers: cat([negative, positive]) for CFG.
        prompt_embeds, negative_embeds = self.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=guidance_scale > 1.0,
            negative_prompt=negative_prompt,
        )
        if guidance_scale > 1.0:
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds])
        # 2. Initial latents: randn_tensor(shape, generator) × init_noise_sigma, as diffusers.
        n_images = batch * num_images_per_prompt
        z_T = self.prepare_latents(
            batch_size=n_images,
            num_channels_latents=self.unet.config.in_channels,
            height=height,
            width=width,
            dtype=prompt_embeds.dtype,
            device=device,
            generator=generator,
            latents=latents,
        )
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            w = torch.tensor(guidance_scale - 1).repeat(n_images)
            timestep_cond = self.get_guidance_scale_embedding(
                w, embedding_dim=self.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=z_T.dtype)
        # 3. safescore's DDIM (or DPM-Solver++) loop; the density sees latents through a decoder.
        schedule = NoiseSchedule.from_diffusers(self.scheduler)
        if solver == "ddim":
            timesteps = schedule.ddim_timesteps(num_inference_steps)
        else:
            timesteps = dpm_solver_timesteps(schedule, num_inference_steps)
        eps_model = self.eps_model(prompt_embeds, guidance_scale, timestep_cond, timesteps)
        common = dict(
            guidance=guidance,
            record=record or record_previews,
            progress=progress,
            callback=callback,
        )
        if solver == "ddim":
            result = ddim_sample(
                eps_model,
                schedule,
                z_T,
                num_inference_steps,
                eta=eta,
                generator=generator if eta > 0 else None,
                **common,
            )
        else:
            result = dpm_solver_sample(eps_model, schedule, z_T, num_inference_steps, **common)
        z_0 = result.samples
        # 4. Decode and post-process, as diffusers (post-hoc safety checker if one is loaded).
        nsfw = None
        if output_type == "latent":
            images = z_0
        else:
            decoded = self.vae.decode(
                z_0 / self.vae.config.scaling_factor, return_dict=False, generator=generator
            )[0]
            decoded, nsfw = self.run_safety_checker(decoded, device, prompt_embeds.dtype)
            denormalize = [True] * decoded.shape[0] if nsfw is None else [not f for f in nsfw]
            images = self.image_processor.postprocess(
                decoded, output_type=output_type, do_denormalize=denormalize
            )
        self.maybe_free_model_hooks()
        out = SafeStableDiffusionOutput(
            images=images,
            nsfw_content_detected=nsfw,
            timesteps=result.timesteps,
            random_weights=bool(self.random_weights),
            seconds=result.seconds,
        )
        if result.harm is not None:
            out.harm, out.corrected = result.harm, result.corrected
            out.x0_latents = result.x0_hats.cpu()
        if record_previews:
            out.x0_previews = self._previews(result.x0_hats)
            out.x0_previews_guided = self._previews(result.x0_hats_guided)
        return out

    def _latent_guidance(self, guidance, density_vae):
        """``guidance`` with its density on latents, through ``density_vae`` or the pipeline's VAE."""
        if density_vae is None:
            return latent_guidance(guidance, self.vae)
        if not hasattr(density_vae, "decode") or not hasattr(density_vae, "config"):
            raise TypeError(
                "density_vae must be a diffusers autoencoder (AutoencoderKL, AutoencoderTiny), "
                f"got {type(density_vae).__name__}"
            )
        if guidance is None:
            return None
        if isinstance(getattr(guidance, "density", None), VaeDecodedDensity):
            raise ValueError(
                "density_vae is given but guidance.density already acts on latents through its "
                "own decoder; pass an image density, or build it with vae=density_vae"
            )
        return latent_guidance(guidance, density_vae)

    def _previews(self, x0_hats: torch.Tensor) -> np.ndarray:
        """Decode x̂0 latents (steps, N, C, h, w) -> (steps, N, H, W, 3) in [0, 1]."""
        return np.stack([self.decode_latents_to_images(z, "np") for z in x0_hats])
