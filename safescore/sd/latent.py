"""Harm densities on Stable Diffusion latents: p_h pulled back through the VAE decoder.

The sampler works on latents z (B, 4, h, w); p_h is defined on images x (B, 3, H, W) in [-1, 1].
The latent density is ``p_h(decode(z / scaling_factor))``, so ∇_z log p_h flows through the VAE
decoder and the density's image encoder, never through the UNet (method.md, "Latent models").
"""

from __future__ import annotations

import copy

import torch

from ..densities.base import DecodedDensity


class VaeDecoder(torch.nn.Module):
    """``z -> vae.decode(z / scaling_factor)``: latents (B, C, h, w) -> images (B, 3, H, W) in ~[-1, 1].

    Follows diffusers' pipelines: latents are divided by ``vae.config.scaling_factor`` (and, for
    VAEs with ``latents_mean``/``latents_std``, de-normalised) before ``vae.decode``.
    """

    def __init__(self, vae):
        super().__init__()
        if not hasattr(vae, "decode") or not hasattr(vae, "config"):
            raise TypeError(
                f"vae must be a diffusers AutoencoderKL-like model, got {type(vae).__name__}"
            )
        self.vae = vae

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
        z = self.unscale(z).to(self.vae.dtype)
        return self.vae.decode(z, return_dict=False)[0]


class VaeDecodedDensity(DecodedDensity):
    """p_h(vae.decode(z / scaling_factor)) for latents z of shape (B, C, h, w) -> (B,)."""

    def __init__(self, density, vae):
        super().__init__(density, VaeDecoder(vae))


def latent_guidance(guidance, vae):
    """A copy of ``guidance`` whose density sees latents through ``vae`` (unchanged if it already does).

    ``guidance`` is a :class:`safescore.SafeGuidance` / :class:`safescore.NegativeGuidance` (or any
    object with a ``density``) whose density acts on images in [-1, 1]; the copy's density is
    :class:`VaeDecodedDensity`. None stays None.
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
        return guidance
    if vae is None:
        raise ValueError("vae is needed to evaluate an image density on latents; pass vae=")
    out = copy.copy(guidance)
    out.density = VaeDecodedDensity(density, vae)
    return out
