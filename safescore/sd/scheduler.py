"""A drop-in ``DDIMScheduler`` that applies safe guidance to x̂0 inside ``step``.

Any diffusers pipeline that takes a DDIM scheduler (StableDiffusionPipeline,
StableDiffusionXLPipeline, ...) gets the thesis' safe sampler with

    pipe.scheduler = SafeDDIMScheduler.from_scheduler(pipe.scheduler, guidance=..., vae=pipe.vae)

``step`` converts the model output to x̂0 and ε as diffusers' DDIM step does (Song et al. 2021,
eq. 9; clipping and thresholding included), then calls the core's guidance site
(`safescore.core.sampling.predict_and_guide`, the one every sampler uses) and the core's
DDIM update (`safescore.core.steps.ddim_step`, eqs. 12 and 16) with diffusers' variance
noise. The update uses the corrected x̂0 and the ORIGINAL ε.
With ``guidance=None``, or when no sample passes the threshold, it is ``DDIMScheduler.step``
bit for bit.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, SchedulerMixin
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from ..core.sampling import predict_and_guide
from ..core.steps import ddim_step
from .latent import latent_guidance

# diffusers' ``from_pretrained`` finds a component's loader by looking up its base classes by name
# in the module that model_index.json names (here ``safescore.sd.scheduler``): keep this name here,
# so that ``pipe.save_pretrained(d)`` then ``StableDiffusionPipeline.from_pretrained(d)`` works.
__all__ = ["SafeDDIMScheduler", "SchedulerMixin"]


class SafeDDIMScheduler(DDIMScheduler):
    """``DDIMScheduler`` whose ``step`` corrects ``pred_original_sample`` with a guidance object.

    Set ``guidance`` (an x̂0-space guidance object, ``guidance(GuidanceState) -> GuidanceOutput``,
    i.e. a `safescore.SafeGuidance`) with `from_scheduler` or `set_guidance`.
    Per-step records of the current run (reset by ``set_timesteps``): ``harm_history`` and
    ``corrected_history``, lists of (B,) tensors on the sampler's device; `history` stacks
    them to (steps, B) on the CPU.
    """

    guidance = None

    @classmethod
    def from_scheduler(cls, scheduler, guidance=None, vae=None) -> SafeDDIMScheduler:
        """A SafeDDIMScheduler with ``scheduler``'s config.

        Args:
            scheduler: a diffusers ``DDIMScheduler`` (any other class is a TypeError: the
                correction is defined for DDIM's x̂0).
            guidance: a `safescore.SafeGuidance` (or None). An image density is pulled back
                through ``vae``'s decoder; a latent one (``VaeDecodedDensity``) is used as is.
            vae: the pipeline's VAE (``pipe.vae``), needed for an image density.
        """
        if not isinstance(scheduler, DDIMScheduler):
            raise TypeError(
                "scheduler must be a diffusers DDIMScheduler to wrap with safe guidance, got "
                f"{type(scheduler).__name__}; build one with DDIMScheduler.from_config(pipe.scheduler.config)"
            )
        new = cls.from_config(scheduler.config)
        new.set_guidance(guidance, vae)
        return new

    def set_guidance(self, guidance, vae=None) -> None:
        """Attach a guidance object (see `from_scheduler`); None turns guidance off."""
        if guidance is not None and (
            not callable(guidance) or getattr(guidance, "differentiates_denoiser", False)
        ):
            raise TypeError(
                "guidance must be an x̂0-space guidance object (safescore.SafeGuidance), got "
                f"{type(guidance).__name__}; NegativeGuidance differentiates through the UNet "
                "and needs SafeStableDiffusionPipeline"
            )
        self.guidance = latent_guidance(guidance, vae)
        self.reset_history()

    def reset_history(self) -> None:
        self.harm_history: list[torch.Tensor] = []
        self.corrected_history: list[torch.Tensor] = []

    def history(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(harm (steps, B) float64, corrected (steps, B) bool) of the current run, on the CPU."""
        if not self.harm_history:
            raise ValueError("no guided step has run since set_timesteps")
        harm = torch.stack(self.harm_history).to(torch.float64).cpu()
        return harm, torch.stack(self.corrected_history).cpu()

    def set_timesteps(self, num_inference_steps, device=None):
        super().set_timesteps(num_inference_steps, device=device)
        # Step index of each timestep, kept on the host (one copy here, none per step).
        self._step_of = {int(t): i for i, t in enumerate(self.timesteps.tolist())}
        self.reset_history()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple:
        """DDIM step with the guidance site; same signature and arithmetic as ``DDIMScheduler.step``."""
        if self.num_inference_steps is None:
            raise ValueError("num_inference_steps is None: run set_timesteps before step")
        # 1. Previous timestep (diffusers' rule t - T // n).
        prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps
        # 2. ᾱ_t and ᾱ_prev.
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (
            self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        )
        beta_prod_t = 1 - alpha_prod_t
        # 3. x̂0 and ε from the model output (DDIM eq. 9).
        kind = self.config.prediction_type
        if kind == "epsilon":
            pred_original_sample = (
                sample - beta_prod_t ** (0.5) * model_output
            ) / alpha_prod_t ** (0.5)
            pred_epsilon = model_output
        elif kind == "sample":
            pred_original_sample = model_output
            pred_epsilon = (
                sample - alpha_prod_t ** (0.5) * pred_original_sample
            ) / beta_prod_t ** (0.5)
        elif kind == "v_prediction":
            pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
        else:
            raise ValueError(
                f"prediction_type must be 'epsilon', 'sample' or 'v_prediction', got {kind!r}"
            )
        # 4. Clip or threshold x̂0 (as DDIMScheduler).
        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(
                -self.config.clip_sample_range, self.config.clip_sample_range
            )
        if use_clipped_model_output:
            pred_epsilon = (
                sample - alpha_prod_t ** (0.5) * pred_original_sample
            ) / beta_prod_t ** (0.5)
        # 5. >>> GUIDANCE SITE (the core's, shared with every sampler) <<<
        guided = pred_original_sample
        if self.guidance is not None:
            t = int(timestep)
            out = predict_and_guide(
                sample,
                t,
                alpha_prod_t,
                eps=pred_epsilon,
                x0_hat=pred_original_sample,
                guidance=self.guidance,
                t_next=int(prev_timestep),
                step_index=getattr(self, "_step_of", {}).get(t, 0),
                num_steps=self.num_inference_steps,
            )
            guided, pred_epsilon = out.x0_hat, out.eps
            # Kept on the device: a per-step .cpu() would synchronise CUDA; history() copies.
            self.harm_history.append(out.harm.detach())
            self.corrected_history.append(out.corrected.detach())
        # 6. The core DDIM update (eq. 12, σ_t of eq. 16) with the guided x̂0, the original ε
        #    and diffusers' variance noise.
        if eta > 0 and variance_noise is not None and generator is not None:
            raise ValueError("pass either generator or variance_noise, not both")
        if eta > 0 and variance_noise is None:
            variance_noise = randn_tensor(
                model_output.shape,
                generator=generator,
                device=model_output.device,
                dtype=model_output.dtype,
            )
        prev_sample = ddim_step(
            sample,
            pred_epsilon,
            alpha_prod_t,
            alpha_prod_t_prev,
            eta=eta,
            x0_hat=guided,
            noise=variance_noise,
        ).prev_sample
        pred_original_sample = guided
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDIMSchedulerOutput(
            prev_sample=prev_sample, pred_original_sample=pred_original_sample
        )
