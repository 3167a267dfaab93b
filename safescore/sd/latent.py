"""Harm densities on Stable Diffusion latents: p_h pulled back through the VAE decoder.

The sampler works on latents z (B, 4, h, w); p_h is defined on images x (B, 3, H, W) in [-1, 1].
The latent density is ``p_h(decode(z / scaling_factor))``, so ∇_z log p_h flows through the VAE
decoder and the density's image encoder, never through the UNet (method.md, "Latent models").

The decoder the density sees is the price of safe sampling (one decode per checked step, and a
backward through it per corrected step), so it can be made cheaper, each option off by default:

* a cheap decoder: any VAE-like model with ``decode`` and ``config.scaling_factor``, e.g.
  diffusers' ``AutoencoderTiny`` (TAESD architecture, `load_tiny_vae`), used for the
  threshold check and the gradient only; the final image still comes from the pipeline's VAE;
* ``latent_pool=k``: decode the latent average-pooled k× (k² fewer decoder FLOPs, an image k×
  smaller) — sensible when the density resizes to a smaller size anyway (CLIP: 224²);
* ``checkpoint=True``: gradient checkpointing of the decoder's blocks in the backward pass
  (less memory, one more decoder forward); it turns on the VAE decoder's own checkpointing
  flags for good (they act only when gradients are enabled);
* ``autocast=torch.float16 | torch.bfloat16``: the density pass (decoder and image encoder)
  under ``torch.autocast`` on the latents' device.
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch
import torch.nn.functional as F

from ..core.density import DecodedDensity

AUTOCAST_DTYPES = (None, torch.float16, torch.bfloat16)


def _checkpoint_func(module, *args):
    """diffusers' default checkpointing function (non-reentrant torch.utils.checkpoint)."""
    return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)


def _checkpointable(vae) -> list:
    """The submodules of ``vae``'s decoder that diffusers knows how to checkpoint."""
    root = getattr(vae, "decoder", vae)
    return [m for m in root.modules() if hasattr(m, "gradient_checkpointing")]


def enable_decoder_checkpointing(vae) -> None:
    """Turn on diffusers' gradient checkpointing of ``vae.decoder``'s blocks, for good.

    The flags must still be on when autograd recomputes a block in the backward pass: a block
    recomputed with other flags than in its forward saves other tensors, and torch raises a
    ``CheckpointError`` (seen on CUDA float16 when the flags were restored right after the
    forward). diffusers checkpoints only when gradients are enabled, so decodes under
    ``no_grad`` (the pipeline's final image) run exactly as before.
    """
    for m in _checkpointable(vae):
        m.gradient_checkpointing = True
        m._gradient_checkpointing_func = _checkpoint_func


def _check_pool(latent_pool) -> int:
    if isinstance(latent_pool, bool) or not isinstance(latent_pool, int) or latent_pool < 1:
        raise ValueError(f"latent_pool must be an integer >= 1, got {latent_pool!r}")
    return latent_pool


def _check_autocast(autocast):
    if autocast not in AUTOCAST_DTYPES:
        raise ValueError(
            f"autocast must be None, torch.float16 or torch.bfloat16, got {autocast!r}"
        )
    return autocast


class VaeDecoder(torch.nn.Module):
    """``z -> vae.decode(z / scaling_factor)``: latents (B, C, h, w) -> images (B, 3, H, W) in ~[-1, 1].

    Follows diffusers' pipelines: latents are divided by ``vae.config.scaling_factor`` (and, for
    VAEs with ``latents_mean``/``latents_std``, de-normalised) before ``vae.decode``. Works for
    ``AutoencoderKL`` and ``AutoencoderTiny`` (whose scaling factor is 1).

    Args:
        vae: a diffusers autoencoder.
        checkpoint: gradient checkpointing of the decoder's blocks when gradients are enabled.
        latent_pool: decode ``avg_pool2d(z, latent_pool)``; the images are (B, 3, H/k, W/k).
    """

    def __init__(self, vae, *, checkpoint: bool = False, latent_pool: int = 1):
        super().__init__()
        if not hasattr(vae, "decode") or not hasattr(vae, "config"):
            raise TypeError(
                f"vae must be a diffusers AutoencoderKL-like model, got {type(vae).__name__}"
            )
        if not isinstance(checkpoint, bool):
            raise TypeError(f"checkpoint must be True or False, got {checkpoint!r}")
        if checkpoint and not _checkpointable(vae):
            raise ValueError(
                f"checkpoint=True: {type(vae).__name__}'s decoder has no blocks diffusers can "
                "checkpoint"
            )
        self.vae = vae
        self.checkpoint = checkpoint
        self.latent_pool = _check_pool(latent_pool)
        if checkpoint:
            enable_decoder_checkpointing(vae)

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        config = self.vae.config
        mean = getattr(config, "latents_mean", None)
        std = getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(mean, device=z.device, dtype=z.dtype).view(shape)
            std = torch.tensor(std, device=z.device, dtype=z.dtype).view(shape)
            return z * std / config.scaling_factor + mean
        return z / config.scaling_factor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k = self.latent_pool
        if k > 1:
            if z.shape[-1] % k or z.shape[-2] % k:
                raise ValueError(
                    f"latent_pool={k} must divide the latent size {tuple(z.shape[-2:])}"
                )
            z = F.avg_pool2d(z, k)
        z = self.unscale(z).to(self.vae.dtype)
        return self.vae.decode(z, return_dict=False)[0]


class VaeDecodedDensity(DecodedDensity):
    """p_h(vae.decode(z / scaling_factor)) for latents z of shape (B, C, h, w) -> (B,).

    Args:
        density: an image density (images (B, 3, H, W) in [-1, 1]).
        vae: the decoder the density sees: the pipeline's VAE or a cheap one (AutoencoderTiny).
        autocast: None (default: the density runs in the models' own dtype) or torch.float16 /
            torch.bfloat16 — decoder and density under ``torch.autocast`` on the latents'
            device; the values are returned as float32.
        checkpoint, latent_pool: as `VaeDecoder`.
    """

    def __init__(self, density, vae, *, autocast=None, checkpoint=False, latent_pool=1):
        super().__init__(density, VaeDecoder(vae, checkpoint=checkpoint, latent_pool=latent_pool))
        self.autocast = _check_autocast(autocast)

    def _context(self, z: torch.Tensor):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=z.device.type, dtype=self.autocast)

    def prob(self, z):
        with self._context(z):
            value = super().prob(z)
        return value if self.autocast is None else value.float()

    def log_prob(self, z):
        with self._context(z):
            value = super().log_prob(z)
        return value if self.autocast is None else value.float()

    def __repr__(self) -> str:
        d = self.decoder
        return (
            f"VaeDecodedDensity({self.density!r}, vae={type(d.vae).__name__}, "
            f"autocast={self.autocast}, checkpoint={d.checkpoint}, latent_pool={d.latent_pool})"
        )


def latent_guidance(guidance, vae, *, autocast=None, checkpoint=False, latent_pool=1):
    """A copy of ``guidance`` whose density sees latents through ``vae`` (unchanged if it already does).

    ``guidance`` is a `safescore.SafeGuidance` / `safescore.NegativeGuidance` (or any
    object with a ``density``) whose density acts on images in [-1, 1]; the copy's density is
    `VaeDecodedDensity` with the given options (see there). ``vae`` may be a cheap decoder
    (``AutoencoderTiny``). None stays None. A density already on latents is kept as it is; asking
    for options on it is a ValueError (build it with the options instead).
    """
    if guidance is None:
        return None
    density = getattr(guidance, "density", None)
    if density is None:
        raise TypeError(
            "guidance must be None or a guidance object with a `density` "
            f"(SafeGuidance, NegativeGuidance), got {type(guidance).__name__}"
        )
    if isinstance(density, VaeDecodedDensity):
        if autocast is not None or checkpoint or latent_pool != 1:
            raise ValueError(
                "guidance.density already acts on latents (VaeDecodedDensity); set autocast, "
                "checkpoint and latent_pool when building it"
            )
        return guidance
    if vae is None:
        raise ValueError("vae is needed to evaluate an image density on latents; pass vae=")
    out = copy.copy(guidance)
    out.density = VaeDecodedDensity(
        density, vae, autocast=autocast, checkpoint=checkpoint, latent_pool=latent_pool
    )
    return out


def load_tiny_vae(path, *, torch_dtype=None, device=None):
    """diffusers' ``AutoencoderTiny`` (TAESD architecture) from a local folder or hub id.

    Weights for Stable Diffusion 1.x/2.x latents are ``madebyollin/taesd`` (SDXL: ``taesdxl``);
    nothing is downloaded when the hub is unreachable (a clear FileNotFoundError).
    """
    from diffusers import AutoencoderTiny

    from .hub import load_pretrained

    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    vae = load_pretrained(AutoencoderTiny.from_pretrained, os.fspath(path), **kwargs)
    if device is not None:
        vae = vae.to(device)
    return vae.eval()
