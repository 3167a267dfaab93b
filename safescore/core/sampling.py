"""ONE sampler loop with ONE guidance site, for DDIM and DPM-Solver++(2M).

Each step (notation of `safescore.core.steps`):

    1. eps    = eps_model(x_t, t)                        the ε-model, no autograd graph
    2. x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)    Tweedie (DDIM eq. 9)
    3. >>> GUIDANCE SITE <<<  (`predict_and_guide`) SafeGuidance edits x̂0,
       NegativeGuidance edits ε (and x̂0 with it)
    4. the solver's update with the (possibly corrected) x̂0 and the ε the guidance returned:
       DDIM eq. 12, or DPM-Solver++(2M) (Lu et al. 2022) on the point those two describe.

`predict_and_guide` is shared with `safescore.sd.SafeDDIMScheduler`, so every
solver and the diffusers drop-in consult guidance the same way.

DPM-Solver++ details. Its data-prediction update re-derives ε from x_i and x̂0, so a guided step
first moves the current point to the one the guided pair describes, x_i <- α_i x̂0 + s_i ε:
for SafeGuidance (x̂0 corrected, ε original, as DDIM) this is x_i + α_i (x̂0_corrected - x̂0);
for an ε-editing guidance (x̂0 recomputed from the guided ε) it is x_i itself. Samples guided at
this step or the previous one take the first-order update (a correction is a jump in x̂0, not a
smooth change, and 2M would extrapolate through it). So with ``order=1`` DPM-Solver++ equals
DDIM (``eta = 0``) on the same timesteps, guided or not. With ``guidance=None`` each step equals
diffusers' ``DPMSolverMultistepScheduler`` (algorithm_type="dpmsolver++", solver_order=2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .protocol import EpsModel, GuidanceOutput, GuidanceState
from .schedules import NoiseSchedule, as_schedule, dpm_solver_timesteps
from .steps import DPMSolverCoefficients, _check_eta, ddim_step, dpm_solver_step, predict_x0

SOLVERS = ("ddim", "dpm++2m")


# --------------------------------------------------------------------------- result
@dataclass
class SampleResult:
    """Output of `sample` (and `ddim_sample`, `dpm_solver_sample`).

    samples: x_0, shape (B, ...). With ``record=True`` also:
    trajectory (num_steps+1, B, ...) with x_T first; x0_hats (num_steps, B, ...) the Tweedie x̂0
    before guidance; x0_hats_guided (num_steps, B, ...) the x̂0 the update used; harm
    (num_steps, B) p_h(x̂0) (NaN when not evaluated); corrected (num_steps, B) bool.
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

    @property
    def ever_corrected(self) -> torch.Tensor:
        """Bool (B,): the samples that CDTC corrected at least once (needs ``record=True``)."""
        if self.corrected is None:
            raise ValueError("ever_corrected needs a result sampled with record=True")
        return self.corrected.any(dim=0)


class _Recorder:
    """Per-step records of one run: the optional ``record`` tensors and the ``callback`` dict."""

    def __init__(self, x_T: torch.Tensor, record: bool, callback):
        self.record, self.callback, self.B = record, callback, x_T.shape[0]
        self.traj, self.x0s, self.x0gs, self.harms, self.masks = [x_T], [], [], [], []

    def step(self, *, i, t_cur, t_next, x_cur, x_next, guided: GuidanceOutput):
        harm, corrected = guided.harm, guided.corrected
        if self.record:
            self.traj.append(x_next)
            self.x0s.append(guided.x0_hat_unguided)
            self.x0gs.append(guided.x0_hat)
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
                    "x0_hat": guided.x0_hat,
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


class _FiniteFlags:
    """Finiteness of each step's ε and guided x̂0, kept on the device: one host sync per run.

    A non-finite value poisons every later step, so checking once at the end loses nothing but
    time, and names the first bad step all the same.
    """

    def __init__(self):
        self.flags: list[torch.Tensor] = []
        self.where: list[tuple[str, int, int]] = []

    def add(self, what: str, value: torch.Tensor, i: int, t: int) -> None:
        self.flags.append(torch.isfinite(value).all())
        self.where.append((what, i, t))

    def check(self) -> None:
        if not self.flags:
            return
        ok = torch.stack(self.flags).cpu()  # the one sync
        if not bool(ok.all()):
            what, i, t = self.where[int((~ok).nonzero()[0])]
            raise FloatingPointError(
                f"non-finite values in {what} at step {i} (t={t}); "
                "lower gamma, use a threshold, or check the model and x_T"
            )


# --------------------------------------------------------------------------- the site
def predict_and_guide(
    x_t: torch.Tensor,
    t: int,
    alpha_bar_t,
    *,
    eps_model: EpsModel | None = None,
    eps: torch.Tensor | None = None,
    x0_hat: torch.Tensor | None = None,
    guidance=None,
    t_next: int = -1,
    step_index: int = 0,
    num_steps: int = 1,
    x0_from_eps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> GuidanceOutput:
    """Steps 1-3 of every sampler: predict ε and x̂0, then THE guidance site.

    Args:
        x_t: current sample, shape (B, ...).
        t: train timestep; alpha_bar_t: ᾱ_t (a number, or a scheduler's 0-dim tensor).
        eps_model: ``(x_t, t) -> eps``; called (without autograd) when ``eps`` is not given.
        eps, x0_hat: the prediction when the caller already has it (a diffusers scheduler);
            x0_hat defaults to Tweedie's.
        guidance: None or a guidance object (``guidance(GuidanceState) -> GuidanceOutput``).
        t_next, step_index, num_steps: where the step is, for γ schedules and records.
        x0_from_eps: ``(x_t, eps) -> x̂0`` when a solver writes Tweedie with its own
            coefficients (DPM-Solver++: (x_t - s_t ε) / α_t); default `predict_x0`.
    Returns:
        `GuidanceOutput`: the ε and x̂0 the update must use, ``x0_hat_unguided``
        (Tweedie's, before guidance), and ``harm`` / ``corrected`` (None without guidance).
    """
    differentiates = bool(getattr(guidance, "differentiates_denoiser", False))
    if differentiates and eps_model is None:
        raise ValueError(
            f"{type(guidance).__name__} differentiates through the eps_model, and none was "
            "given; use SafeGuidance (x̂0 space) here"
        )
    if eps is None and not differentiates:
        # 1. Predict the noise; the ε-model builds no autograd graph here.
        with torch.no_grad():
            eps = eps_model(x_t, t)
        if not isinstance(eps, torch.Tensor) or eps.shape != x_t.shape:
            raise ValueError(
                f"eps_model must return a tensor of shape {tuple(x_t.shape)}, got "
                f"{getattr(eps, 'shape', type(eps).__name__)} at step {step_index} (t={t})"
            )
    # 2. Tweedie's clean-point prediction x̂0 (DDIM eq. 9).
    if x0_hat is None and eps is not None:
        x0_hat = predict_x0(x_t, eps, alpha_bar_t) if x0_from_eps is None else x0_from_eps(x_t, eps)
    if guidance is None:
        return GuidanceOutput(eps=eps, x0_hat=x0_hat, x0_hat_unguided=x0_hat)
    # 3. >>> GUIDANCE SITE: SafeGuidance edits x̂0, NegativeGuidance edits ε. <<<
    state = GuidanceState(
        x_t=x_t,
        t=t,
        t_next=t_next,
        step_index=step_index,
        num_steps=num_steps,
        alpha_bar_t=alpha_bar_t,
        eps=eps,
        x0_hat=x0_hat,
        eps_model=eps_model,
    )
    out = guidance(state)
    if out.x0_hat_unguided is None:
        out.x0_hat_unguided = (
            x0_hat if x0_hat is not None else predict_x0(x_t, out.eps, alpha_bar_t)
        )
    return out


# --------------------------------------------------------------------------- checks
def _check_x_T(x_T) -> None:
    if not isinstance(x_T, torch.Tensor) or x_T.ndim < 1:
        raise TypeError(f"x_T must be a torch.Tensor of shape (B, ...), got {type(x_T).__name__}")
    if not x_T.is_floating_point():
        raise TypeError(
            f"x_T must be a floating-point tensor (float32 or float64), got {x_T.dtype}; "
            "use x_T.double() or x_T.float()"
        )
    if not torch.isfinite(x_T).all():
        raise ValueError("x_T contains NaN or inf; draw it with torch.randn")


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be None or a torch.Generator, got {type(generator).__name__}"
        )


def _timesteps(schedule, num_steps, solver, timesteps) -> list[int]:
    if timesteps is None:
        if solver == "ddim":
            ts = schedule.ddim_timesteps(num_steps)
        else:
            ts = dpm_solver_timesteps(schedule, num_steps)
        return [int(t) for t in ts]
    ts = [int(t) for t in timesteps]
    T = schedule.num_train_timesteps
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] >= T or ts[-1] < 0:
        raise ValueError(
            f"timesteps must be a non-empty, strictly decreasing sequence in [0, {T - 1}], got {ts}"
        )
    return ts


# --------------------------------------------------------------------------- the sampler
def sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    num_steps: int | None = None,
    *,
    solver: str = "ddim",
    eta: float = 0.0,
    order: int = 2,
    timesteps: Sequence[int] | None = None,
    guidance=None,
    generator: torch.Generator | None = None,
    record: bool = False,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> SampleResult:
    """Sample from x_T with DDIM or DPM-Solver++, consulting ``guidance`` once per step at x̂0.

    Args:
        eps_model: callable ``(x_t, t) -> eps`` with x_t of shape (B, ...) and t a train
            timestep (int); returns eps of shape (B, ...).
        schedule: the `NoiseSchedule` the model was trained with.
        x_T: initial noise, shape (B, ...), floating point (its dtype and device are kept).
        num_steps: number of steps (ignored when ``timesteps`` is given).
        solver: "ddim" (DDIM with noise ``eta``, diffusers' DDIM timesteps) or "dpm++2m"
            (DPM-Solver++, diffusers' linspace timesteps, deterministic).
        eta: the DDIM noise η_DDIM in [0, 1] (``solver="ddim"`` only); not the CDTC
            threshold η, which is the guidance's ``threshold``.
        order: DPM-Solver++ order, 1 or 2 (``solver="dpm++2m"`` only).
        timesteps: explicit descending train timesteps instead of the solver's own grid.
        guidance: None or a guidance object (`safescore.SafeGuidance`,
            `safescore.NegativeGuidance`, ...).
        generator: torch generator for the DDIM noise draws (``eta > 0``).
        record: keep the trajectory, x̂0's, p_h(x̂0) and the corrected masks.
        progress: show a tqdm progress bar.
        callback: called after each step with a dict (i, t, t_next, x, x_next, x0_hat, harm,
            corrected).
    Returns:
        `SampleResult`.
    """
    schedule = as_schedule(schedule)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    eta = _check_eta(eta)
    if solver != "ddim" and eta != 0.0:
        raise ValueError(f"eta is a DDIM setting; solver={solver!r} takes eta=0 only")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    _check_x_T(x_T)
    if not callable(eps_model):
        raise TypeError(
            f"eps_model must be callable (x_t, t) -> eps, got {type(eps_model).__name__}"
        )
    if guidance is not None and not callable(guidance):
        raise TypeError("guidance must be None or a guidance object such as SafeGuidance")
    _check_flag("record", record)
    _check_flag("progress", progress)
    _check_generator(generator)
    ts = _timesteps(schedule, num_steps, solver, timesteps)
    n = len(ts)
    t_nexts = ts[1:] + [-1]
    if solver != "ddim":
        coefs = DPMSolverCoefficients.from_alphas_cumprod(
            schedule.alphas_cumprod, torch.tensor(ts), x_T.dtype
        )
    recorder, finite = _Recorder(x_T, record, callback), _FiniteFlags()
    start = time.perf_counter()
    x_cur, x0_prev, guided_prev = x_T, None, None
    desc = "DDIM" if solver == "ddim" else "DPM-Solver++"
    for i, (t_cur, t_next) in enumerate(
        tqdm(list(zip(ts, t_nexts)), desc=desc, disable=not progress)
    ):
        a_cur = schedule.alpha_bar(t_cur) if solver == "ddim" else float(coefs.alphas[i] ** 2)
        # 1-3. Predict ε and x̂0, then the one guidance site.
        g = predict_and_guide(
            x_cur,
            t_cur,
            a_cur,
            eps_model=eps_model,
            guidance=guidance,
            t_next=t_next,
            step_index=i,
            num_steps=n,
            x0_from_eps=None if solver == "ddim" else coefs.data_prediction(i),
        )
        finite.add("the eps_model output", g.eps, i, t_cur)
        finite.add("the guided x0_hat", g.x0_hat, i, t_cur)
        guided = g.corrected
        # 4. The solver's update with the guided x̂0 and the ε the guidance returned.
        if solver == "ddim":  # DDIM eq. 12
            x_next = ddim_step(
                x_cur,
                g.eps,
                a_cur,
                schedule.alpha_bar(t_next),
                eta=eta,
                x0_hat=g.x0_hat,
                generator=generator,
            ).prev_sample
        else:  # DPM-Solver++: on the point the guided (x̂0, ε) describe
            if guided is not None and bool(guided.any()):
                rows = guided.view(-1, *([1] * (x_cur.ndim - 1))).to(x_cur.device)
                moved = coefs.alphas[i] * g.x0_hat + coefs.stds[i] * g.eps
                x_cur = torch.where(rows, moved, x_cur)
            first = order == 1 or x0_prev is None or i == n - 1  # no history / σ_final = 0
            x_first, x_next = dpm_solver_step(
                x_cur, g.x0_hat, i, coefs, x0_prev=None if first else x0_prev
            )
            jumped = guided
            if jumped is not None and guided_prev is not None:
                jumped = jumped | guided_prev
            if not first and jumped is not None and bool(jumped.any()):
                rows = jumped.view(-1, *([1] * (x_cur.ndim - 1))).to(x_cur.device)
                x_next = torch.where(rows, x_first, x_next)
        recorder.step(i=i, t_cur=t_cur, t_next=t_next, x_cur=x_cur, x_next=x_next, guided=g)
        x_cur, x0_prev, guided_prev = x_next, g.x0_hat, guided
    finite.check()
    return recorder.result(x_cur, torch.tensor(ts), start)


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
    """`sample` with ``solver="ddim"``: DDIM from x_T, guidance consulted once per step.

    Each step equals diffusers' ``DDIMScheduler.step`` bit for bit (same ᾱ, dtype and noise).
    """
    return sample(
        eps_model,
        schedule,
        x_T,
        num_steps,
        solver="ddim",
        eta=eta,
        guidance=guidance,
        generator=generator,
        record=record,
        progress=progress,
        callback=callback,
    )


def dpm_solver_sample(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    num_steps: int,
    *,
    guidance=None,
    order: int = 2,
    record: bool = False,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> SampleResult:
    """`sample` with ``solver="dpm++2m"``: DPM-Solver++ (order 1 or 2), same guidance site.

    ``order=1`` is DDIM with ``eta = 0``; the first step (no history yet) and the last (σ = 0) are
    first order, as in diffusers.
    """
    return sample(
        eps_model,
        schedule,
        x_T,
        num_steps,
        solver="dpm++2m",
        order=order,
        guidance=guidance,
        record=record,
        progress=progress,
        callback=callback,
    )
