"""Harm densities p_h, gathered from their layers: the interface (`safescore.core.density`),
analytic toy densities (`safescore.toy.densities`), classifier densities
(`safescore.core.classifier`) and CLIP concepts (`safescore.sd.clip`, loaded on first use:
it needs transformers)."""

from ..core.classifier import ClassifierDensity
from ..core.density import DecodedDensity, HarmDensity
from ..toy.densities import GaussianMixtureDensity, HarmPosteriorDensity, LogisticHarmDensity

__all__ = [
    "HarmDensity",
    "DecodedDensity",
    "GaussianMixtureDensity",
    "HarmPosteriorDensity",
    "LogisticHarmDensity",
    "ClassifierDensity",
    "CLIPConceptDensity",
    "SafetyCheckerDensity",
]


def __getattr__(name):  # CLIP densities need transformers: import them lazily
    if name in ("CLIPConceptDensity", "SafetyCheckerDensity"):
        from ..sd import clip

        return getattr(clip, name)
    raise AttributeError(f"module 'safescore.densities' has no attribute {name!r}")
