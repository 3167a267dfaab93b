"""Toy problems with exact scores: Gaussian mixtures, the 2-D ring, linear manifolds."""

from ..gmm import GaussianMixture
from .problems import ToyProblem, linear_manifold_problem, ring_mixture, ring_problem

__all__ = [
    "GaussianMixture",
    "ToyProblem",
    "ring_mixture",
    "ring_problem",
    "linear_manifold_problem",
]


def __getattr__(name):  # the digits toy needs scikit-learn: import it on first use
    if name == "digits":
        import importlib

        return importlib.import_module(".digits", __name__)
    raise AttributeError(f"module 'safescore.toy' has no attribute {name!r}")
