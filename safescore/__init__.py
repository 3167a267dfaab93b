"""safescore: safe sampling for score-based (diffusion) models.

One sampler loop (`sample`, with `ddim_sample` and `dpm_solver_sample`) samples
any ε-model; a guidance object (`SafeGuidance`, `NegativeGuidance`) is consulted
once per step at the predicted clean point x̂0; a harm density (`safescore.densities`) is
what guidance differentiates.

Layers (each imports only the ones below it):

    cli  ->  eval  ->  sd  ->  toy, plotting  ->  core

``import safescore`` loads the core (torch, numpy, tqdm) only: the toys' scikit-learn, plotting's
matplotlib and Stable Diffusion's diffusers/transformers load when those modules are used.
"""

import importlib

from . import config, core, densities, toy
from ._version import __version__
from .core import (
    SOLVERS,
    ConstantGamma,
    DDIMStepOutput,
    LinearRampGamma,
    NegativeGuidance,
    NoiseSchedule,
    SafeGuidance,
    SampleResult,
    WindowGamma,
    constant,
    ddim_sample,
    ddim_step,
    dpm_solver_sample,
    eps_to_score,
    linear_ramp,
    predict_and_guide,
    predict_x0,
    sample,
    score_to_eps,
    signal_scaled,
    window,
    x0_to_eps,
)
from .toy import GaussianMixture

# Modules reachable as attributes without being imported by ``import safescore``.
_LAZY_MODULES = {
    "plotting": "safescore.plotting",
    "metrics": "safescore.toy.metrics",
    "guidance": "safescore.core.guidance",
    "sd": "safescore.sd",
    "eval": "safescore.eval",
    "cli": "safescore.cli",
}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    raise AttributeError(f"module 'safescore' has no attribute {name!r}")


__all__ = [
    "__version__",
    "NoiseSchedule",
    "SOLVERS",
    "sample",
    "ddim_sample",
    "dpm_solver_sample",
    "ddim_step",
    "predict_and_guide",
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
    "signal_scaled",
    "window",
    "GaussianMixture",
    "config",
    "core",
    "densities",
    "toy",
    "plotting",
    "metrics",
    "guidance",
    "sd",
    "eval",
]
