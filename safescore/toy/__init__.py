"""Toys and teaching helpers: Gaussian mixtures with exact scores, analytic densities, ready-made
problems (the 2-D ring, linear manifolds, digits), small nets and DSM training, Langevin, classic
guidance, metrics and cost measurement. Built on `safescore.core` only."""

from .gmm import GaussianMixture
from .problems import ToyProblem, linear_manifold_problem, ring_mixture, ring_problem

__all__ = [
    "GaussianMixture",
    "ToyProblem",
    "ring_mixture",
    "ring_problem",
    "linear_manifold_problem",
]


_SUBMODULES = (
    "classic_guidance",
    "cost",
    "densities",
    "digits",
    "gmm",
    "langevin",
    "metrics",
    "nets",
    "problems",
    "training",
)


def __getattr__(name):  # submodules on first use (the digits toy needs scikit-learn)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'safescore.toy' has no attribute {name!r}")
