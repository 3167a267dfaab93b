"""The method and nothing else: noise schedules, the pure step math, ONE sampler loop with ONE
guidance site, guidance objects and γ schedules, and the harm-density interface.

Depends on torch, numpy and tqdm only. Every layer above (toy, plotting, sd, eval, cli) builds on
this one, never the other way round.
"""

from .classifier import ClassifierDensity
from .density import DecodedDensity, HarmDensity, grad_log_prob
from .guidance import (
    ConstantGamma,
    Correction,
    GammaSchedule,
    LinearRampGamma,
    NegativeGuidance,
    SafeGuidance,
    WindowGamma,
    constant,
    linear_ramp,
    signal_scaled,
    window,
)
from .protocol import GuidanceOutput, GuidanceState
from .sampling import (
    SOLVERS,
    SampleResult,
    ddim_sample,
    dpm_solver_sample,
    predict_and_guide,
    sample,
)
from .schedules import NoiseSchedule, dpm_solver_timesteps
from .steps import (
    DDIMStepOutput,
    DPMSolverCoefficients,
    ddim_step,
    dpm_solver_step,
    eps_to_score,
    predict_x0,
    score_to_eps,
    x0_to_eps,
)

__all__ = [
    "NoiseSchedule",
    "dpm_solver_timesteps",
    "predict_x0",
    "x0_to_eps",
    "eps_to_score",
    "score_to_eps",
    "ddim_step",
    "DDIMStepOutput",
    "DPMSolverCoefficients",
    "dpm_solver_step",
    "SOLVERS",
    "sample",
    "ddim_sample",
    "dpm_solver_sample",
    "predict_and_guide",
    "SampleResult",
    "GuidanceState",
    "GuidanceOutput",
    "SafeGuidance",
    "NegativeGuidance",
    "Correction",
    "GammaSchedule",
    "ConstantGamma",
    "LinearRampGamma",
    "WindowGamma",
    "constant",
    "linear_ramp",
    "signal_scaled",
    "window",
    "HarmDensity",
    "DecodedDensity",
    "ClassifierDensity",
    "grad_log_prob",
]
