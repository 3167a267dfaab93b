"""Stable Diffusion with safe sampling (needs the ``sd`` extra: diffusers, transformers).

- `SafeStableDiffusionPipeline` — diffusers' Stable Diffusion whose denoising is
  `safescore.ddim_sample`, with guidance on the VAE-decoded x̂0.
- `SafeDDIMScheduler` — a drop-in ``DDIMScheduler`` applying guidance to
  ``pred_original_sample`` inside ``step``, for any diffusers pipeline (SD, SDXL, ...).
- `safescore.sd.presets` — the thesis' variants ("single", "sd-filter", "multi").
- `safescore.sd.clip` — CLIP concept and safety-checker harm densities on images.
- `safescore.sd.tiny` — tiny random-weight components built offline from configs.
- `safescore.sd.mini` — a trained mini Stable Diffusion on digits, shipped with the package.

diffusers and transformers are imported only when one of these names is first used.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "SafeStableDiffusionPipeline": "pipeline",
    "SafeStableDiffusionOutput": "pipeline",
    "SafeDDIMScheduler": "scheduler",
    "VaeDecoder": "latent",
    "VaeDecodedDensity": "latent",
    "latent_guidance": "latent",
    "make_guidance": "presets",
    "CLIPConceptDensity": "clip",
    "SafetyCheckerDensity": "clip",
    "load_pretrained": "hub",
    "PRESETS": "presets",
}
_SUBMODULES = ("clip", "hub", "latent", "mini", "pipeline", "presets", "scheduler", "tiny")

__all__ = list(_LAZY) + list(_SUBMODULES)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'safescore.sd' has no attribute {name!r}")
