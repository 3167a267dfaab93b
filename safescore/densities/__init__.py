"""Harm densities p_h: analytic (toys), classifier-based, and CLIP concepts (``safescore.sd``)."""

from .analytic import GaussianMixtureDensity, HarmPosteriorDensity, LogisticHarmDensity
from .base import DecodedDensity, HarmDensity
from .classifier import ClassifierDensity

NormalizedMixtureDensity = HarmPosteriorDensity

__all__ = [
    "HarmDensity",
    "DecodedDensity",
    "GaussianMixtureDensity",
    "HarmPosteriorDensity",
    "NormalizedMixtureDensity",
    "LogisticHarmDensity",
    "ClassifierDensity",
]


def __getattr__(name):  # CLIP densities need transformers: import them lazily
    if name in ("CLIPConceptDensity", "SafetyCheckerDensity"):
        from . import clip

        return getattr(clip, name)
    raise AttributeError(f"module 'safescore.densities' has no attribute {name!r}")
