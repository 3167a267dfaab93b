"""DDIM sampling with one guidance site per step.

Notation (DDIM, Song et al. 2021):

    x_t        current sample                 eps      ε_θ(x_t, t), the ε-model's prediction
    a_t        ᾱ_t  (alphas_cumprod[t])       a_prev   ᾱ of the next (less noisy) timestep
    x0_hat     x̂0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)             (Tweedie; DDIM eq. 9)
    sigma      σ_t = η sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev)  (DDIM eq. 16)
    x_prev     sqrt(a_prev) x0_hat + sqrt(1 - a_prev - σ_t²) eps + σ_t z   (DDIM eq. 12)

The score is ∇ log p_t(x_t) = -eps / sqrt(1 - a_t).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .schedules import NoiseSchedule, as_schedule

EpsModel = Callable[[torch.Tensor, int], torch.Tensor]


# --------------------------------------------------------------------------- conversions
def _coef(value, like: torch.Tensor) -> torch.Tensor:
    """A scalar as a 0-dim tensor of ``like``'s dtype (CPU, as diffusers keeps its alphas)."""
    return torch.as_tensor(float(value), dtype=like.dtype)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Tweedie's clean-point prediction x̂0 = (x_t - sqrt(1-ᾱ_t) ε) / sqrt(ᾱ_t).

    Args:
        x_t, eps: shape (B, ...). alpha_bar_t: ᾱ_t, a number in (0, 1].
    Returns: x̂0, shape (B, ...).
    """
    a_t = _coef(alpha_bar_t, x_t)
    return (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5


def x0_to_eps(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """The ε consistent with x_t and a clean point: ε = (x_t - sqrt(ᾱ_t) x0) / sqrt(1-ᾱ_t)."""
    a_t = _coef(alpha_bar_t, x_t)
    return (x_t - a_t**0.5 * x0) / (1 - a_t) ** 0.5


def eps_to_score(eps: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Score of the noised marginal: ∇ log p_t(x_t) = -ε / sqrt(1-ᾱ_t)."""
    return -eps / (1 - _coef(alpha_bar_t, eps)) ** 0.5


def score_to_eps(score: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Inverse of :func:`eps_to_score`: ε = -sqrt(1-ᾱ_t) ∇ log p_t(x_t)."""
    return -((1 - _coef(alpha_bar_t, score)) ** 0.5) * score


def _check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be a number in [0, 1] (0 = deterministic DDIM), got {eta!r}")
    return float(eta)


def _check_alpha(name: str, value) -> float:
    v = float(value)
    if not (0.0 < v <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {v}")
    return v


@dataclass
class DDIMStepOutput:
    """One DDIM step: ``prev_sample`` is x_{t_prev}, ``pred_original_sample`` the x̂0 it used."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar_t,
    alpha_bar_prev,
    *,
    eta: float = 0.0,
    x0_hat: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> DDIMStepOutput:
    """One DDIM update x_t -> x_prev (Song et al. 2021, eq. 12).

    The arithmetic follows diffusers' ``DDIMScheduler.step`` term by term, so with the same
    ᾱ values and dtype both give the same bits.

    Args:
        x_t: current sample, shape (B, ...).
        eps: ε-model prediction at (x_t, t), shape (B, ...).
        alpha_bar_t, alpha_bar_prev: ᾱ at t and at the next timestep, numbers in (0, 1].
        eta: DDIM stochasticity η in [0, 1]; 0 is deterministic, 1 is DDPM-like.
        x0_hat: clean-point prediction to use instead of Tweedie's (e.g. a guided one).
        noise: the z of eq. 12, shape (B, ...); drawn from ``generator`` when None and eta > 0.
        generator: torch generator for z.
    Returns:
        DDIMStepOutput(prev_sample, pred_original_sample).
    """
    eta = _check_eta(eta)
    if eps.shape != x_t.shape:
        raise ValueError(
            f"eps must have the shape of x_t {tuple(x_t.shape)}, got {tuple(eps.shape)}"
        )
    a_t = _coef(_check_alpha("alpha_bar_t", alpha_bar_t), x_t)
    a_prev = _coef(_check_alpha("alpha_bar_prev", alpha_bar_prev), x_t)
    # 1. Predicted clean point x̂0 (eq. 9), unless given (guided).
    if x0_hat is None:
        x0_hat = (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    elif x0_hat.shape != x_t.shape:
        raise ValueError(
            f"x0_hat must have the shape of x_t {tuple(x_t.shape)}, got {tuple(x0_hat.shape)}"
        )
    # 2. σ_t (eq. 16).
    variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
    std_dev_t = eta * variance**0.5
    # 3. Direction pointing to x_t, then x_prev without noise (eq. 12).
    direction = (1 - a_prev - std_dev_t**2) ** 0.5 * eps
    x_prev = a_prev**0.5 * x0_hat + direction
    # 4. Add noise σ_t z when η > 0.
    if eta > 0:
        if noise is None:
            gen_device = generator.device if generator is not None else x_t.device
            noise = torch.randn(
                x_t.shape, generator=generator, device=gen_device, dtype=x_t.dtype
            ).to(x_t.device)
        elif noise.shape != x_t.shape:
            raise ValueError(
                f"noise must have the shape of x_t {tuple(x_t.shape)}, got {tuple(noise.shape)}"
            )
        x_prev = x_prev + std_dev_t * noise
    return DDIMStepOutput(prev_sample=x_prev, pred_original_sample=x0_hat)


# --------------------------------------------------------------------------- guidance protocol
@dataclass
class GuidanceState:
    """What the sampler hands a guidance object at the guidance site of one step.

    Shapes: x_t, eps, x0_hat are (B, ...). ``eps`` and ``x0_hat`` are None when the guidance
    computes them itself (``differentiates_denoiser``).
    """

    x_t: torch.Tensor
    t: int
    t_next: int
    step_index: int
    num_steps: int
    alpha_bar_t: float
    eps: torch.Tensor | None
    x0_hat: torch.Tensor | None
    eps_model: EpsModel | None = None


@dataclass
class GuidanceOutput:
    """A guidance object's answer: the ε and x̂0 the DDIM update uses, and what it saw.

    harm: p_h(x̂0) before correction, shape (B,) (or None); corrected: bool mask, shape (B,).
    x0_hat_unguided: Tweedie's x̂0 before guidance, when the guidance computed ε itself.
    """

    eps: torch.Tensor
    x0_hat: torch.Tensor
    harm: torch.Tensor | None = None
    corrected: torch.Tensor | None = None
    x0_hat_unguided: torch.Tensor | None = None


# --------------------------------------------------------------------------- the sampler
@dataclass
class SampleResult:
    """Output of :func:`ddim_sample`.

    samples: x_0, shape (B, ...). With ``record=True`` also:
    trajectory (num_steps+1, B, ...) with x_T first; x0_hats (num_steps, B, ...) the Tweedie x̂0
    before guidance; x0_hats_guided (num_steps, B, ...) the x̂0 the update used; harm
    (num_steps, B) p_h(x̂0) (NaN when no guidance); corrected (num_steps, B) bool.
    timesteps (num_steps,) and seconds are always set.
    """

    samples: torch.Tensor
    timesteps: torch.Tensor
    seconds: float = 0.0
    trajectory: torch.Tensor | None = None
    x0_hats: torch.Tensor | None = None
    x0_hats_guided: torch.Tensor | None = None
    harm: torch.Tensor | None = None
    corrected: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @property
    def ever_corrected(self) -> torch.Tensor:
        """Bool (B,): the samples that CDTC corrected at least once (needs ``record=True``)."""
        if self.corrected is None:
            raise ValueError("ever_corrected needs a result sampled with record=True")
        return self.corrected.any(dim=0)


class _Recorder:
    """Per-step records of a sampler run (used by ddim_sample and dpm_solver_sample)."""

    def __init__(self, x_T: torch.Tensor, record: bool, callback):
        self.record, self.callback, self.B = record, callback, x_T.shape[0]
        self.traj, self.x0s, self.x0gs, self.harms, self.masks = [x_T], [], [], [], []

    def step(self, i, t_cur, t_next, x_cur, x_next, x0_plain, x0_hat, harm, corrected):
        if self.record:
            self.traj.append(x_next)
            self.x0s.append(x0_plain)
            self.x0gs.append(x0_hat)
            nan = torch.full((self.B,), float("nan"), dtype=torch.float64)
            self.harms.append(nan if harm is None else harm.detach().double().cpu())
            none = torch.zeros(self.B, dtype=torch.bool)
            self.masks.append(none if corrected is None else corrected.detach().cpu())
        if self.callback is not None:
            self.callback(
                {
                    "i": i,
                    "t": t_cur,
                    "t_next": t_next,
                    "x": x_cur,
                    "x_next": x_next,
                    "x0_hat": x0_hat,
                    "harm": harm,
                    "corrected": corrected,
                }
            )

    def result(self, samples, timesteps, start: float) -> SampleResult:
        out = SampleResult(
            samples=samples, timesteps=timesteps, seconds=time.perf_counter() - start
        )
        if self.record:
            out.trajectory = torch.stack(self.traj)
            out.x0_hats = torch.stack(self.x0s)
            out.x0_hats_guided = torch.stack(self.x0gs)
            out.harm = torch.stack(self.harms)
            out.corrected = torch.stack(self.masks)
        return out


def _check_finite(name: str, value: torch.Tensor, step_index: int, t: int) -> None:
    if not torch.isfinite(value).all():
        raise FloatingPointError(
            f"non-finite values in {name} at step {step_index} (t={t}); "
            "lower gamma, use a threshold, or check the model"
        )


def ddim_sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    num_steps: int,
    *,
    eta: float = 0.0,
    guidance=None,
    generator: torch.Generator | None = None,
    record: bool = False,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> SampleResult:
    """Sample with DDIM from x_T, consulting ``guidance`` once per step at x̂0.

    Args:
        eps_model: callable ``(x_t, t) -> eps`` with x_t of shape (B, ...) and t a train
            timestep (int); returns eps of shape (B, ...).
        schedule: the :class:`NoiseSchedule` the model was trained with.
        x_T: initial noise, shape (B, ...) (its dtype and device are used throughout).
        num_steps: number of DDIM steps, 1 <= num_steps <= schedule.num_train_timesteps.
        eta: DDIM stochasticity η in [0, 1].
        guidance: None, or a guidance object (:class:`safescore.SafeGuidance`,
            :class:`safescore.NegativeGuidance`) called as ``guidance(GuidanceState)``.
        generator: torch generator for the DDIM noise (η > 0).
        record: keep the trajectory, x̂0's, p_h(x̂0) and the corrected masks.
        progress: show a tqdm progress bar.
        callback: called after each step with a dict (i, t, t_next, x, x_next, x0_hat, harm,
            corrected); recording that costs nothing extra.
    Returns:
        :class:`SampleResult`.
    """
    schedule = as_schedule(schedule)
    eta = _check_eta(eta)
    if not isinstance(x_T, torch.Tensor) or x_T.ndim < 1:
        raise TypeError("x_T must be a torch.Tensor of shape (B, ...)")
    if not callable(eps_model):
        raise TypeError(
            f"eps_model must be callable (x_t, t) -> eps, got {type(eps_model).__name__}"
        )
    if guidance is not None and not callable(guidance):
        raise TypeError("guidance must be None or a guidance object such as SafeGuidance")
    pairs = schedule.timestep_pairs(num_steps)
    differentiates = bool(getattr(guidance, "differentiates_denoiser", False))
    recorder = _Recorder(x_T, record, callback)
    start = time.perf_counter()
    x_cur = x_T
    for i, (t_cur, t_next) in enumerate(tqdm(pairs, desc="DDIM", disable=not progress)):
        a_cur, a_next = schedule.alpha_bar(t_cur), schedule.alpha_bar(t_next)
        # 1. Predict the noise; the ε-model builds no autograd graph here.
        eps = x0_hat = None
        if not differentiates:
            with torch.no_grad():
                eps = eps_model(x_cur, t_cur)
            if not isinstance(eps, torch.Tensor) or eps.shape != x_cur.shape:
                raise ValueError(
                    f"eps_model must return a tensor of shape {tuple(x_cur.shape)}, got "
                    f"{getattr(eps, 'shape', type(eps).__name__)} at step {i} (t={t_cur})"
                )
            _check_finite("the eps_model output", eps, i, t_cur)
            # 2. Tweedie's clean-point prediction x̂0 (DDIM eq. 9).
            x0_hat = predict_x0(x_cur, eps, a_cur)
        x0_plain = x0_hat
        # 3. >>> GUIDANCE SITE: SafeGuidance edits x̂0, NegativeGuidance edits ε. <<<
        harm = corrected = None
        if guidance is not None:
            state = GuidanceState(
                x_cur, t_cur, t_next, i, len(pairs), a_cur, eps, x0_hat, eps_model
            )
            out = guidance(state)
            eps, x0_hat, harm, corrected = out.eps, out.x0_hat, out.harm, out.corrected
            if x0_plain is None:  # guidance computed ε itself
                x0_plain = out.x0_hat_unguided
            _check_finite("the guided x0_hat", x0_hat, i, t_cur)
        # 4. DDIM update with the (possibly corrected) x̂0 and the original ε (eq. 12).
        x_next = ddim_step(x_cur, eps, a_cur, a_next, eta=eta, x0_hat=x0_hat, generator=generator)
        x_next = x_next.prev_sample
        recorder.step(i, t_cur, t_next, x_cur, x_next, x0_plain, x0_hat, harm, corrected)
        x_cur = x_next
    return recorder.result(x_cur, torch.tensor([p[0] for p in pairs]), start)
