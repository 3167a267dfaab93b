"""safescore: safe sampling for score-based (diffusion) models.

One DDIM loop (:func:`ddim_sample`) samples any ε-model; a guidance object
(:class:`SafeGuidance`, :class:`NegativeGuidance`) is consulted once per step at the predicted
clean point x̂0; a harm density (:mod:`safescore.densities`) is what guidance differentiates.
"""

from . import config, densities, guidance, metrics, toy
from .gmm import GaussianMixture
from .guidance import (
    ConstantGamma,
    LinearRampGamma,
    NegativeGuidance,
    SafeGuidance,
    WindowGamma,
    constant,
    linear_ramp,
    window,
)
from .sampling import (
    DDIMStepOutput,
    SampleResult,
    ddim_sample,
    ddim_step,
    eps_to_score,
    predict_x0,
    score_to_eps,
    x0_to_eps,
)
from .schedules import NoiseSchedule
from .solvers import dpm_solver_sample

__version__ = "0.1.0"

__all__ = [
    "NoiseSchedule",
    "ddim_sample",
    "ddim_step",
    "dpm_solver_sample",
    "DDIMStepOutput",
    "SampleResult",
    "predict_x0",
    "x0_to_eps",
    "eps_to_score",
    "score_to_eps",
    "SafeGuidance",
    "NegativeGuidance",
    "ConstantGamma",
    "LinearRampGamma",
    "WindowGamma",
    "constant",
    "linear_ramp",
    "window",
    "GaussianMixture",
    "config",
    "densities",
    "guidance",
    "metrics",
    "toy",
]
