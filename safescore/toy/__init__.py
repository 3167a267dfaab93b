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
