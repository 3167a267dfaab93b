"""DPM-Solver++(2M): parity with diffusers' DPMSolverMultistepScheduler, and the same CDTC site."""

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from safescore import NoiseSchedule, SafeGuidance, ddim_step, metrics
from safescore.core import dpm_solver_sample, dpm_solver_timesteps
from safescore.toy import ring_problem


def fake_eps_model(x, t):
    return torch.tanh(0.7 * x + 0.001 * float(t)) * 0.9 + 0.05 * x.roll(1, dims=-1)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 25])
@pytest.mark.parametrize("beta_schedule", ["scaled_linear", "linear"])
def test_matches_diffusers_dpm_solver_pp_2m_bit_for_bit(n, beta_schedule):
    sched = DPMSolverMultistepScheduler(
        beta_schedule=beta_schedule, algorithm_type="dpmsolver++", solver_order=2
    )
    sched.set_timesteps(n)
    schedule = NoiseSchedule.from_diffusers(sched)
    assert torch.equal(dpm_solver_timesteps(schedule, n), sched.timesteps)
    x_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    x = x_T
    for t in sched.timesteps:
        x = sched.step(fake_eps_model(x, int(t)), t, x).prev_sample
    ours = dpm_solver_sample(fake_eps_model, schedule, x_T, n)
    assert torch.equal(ours.samples, x)


def test_first_order_steps_are_ddim_steps():
    """DPM-Solver++ of order 1 is DDIM (eta = 0): every step agrees to float64 round-off."""
    p = ring_problem()
    eps_model = p.eps_model()
    steps = []
    dpm_solver_sample(
        eps_model,
        p.schedule,
        p.noise(100, torch.Generator().manual_seed(0)),
        10,
        order=1,
        callback=steps.append,
    )
    for s in steps:
        ref = ddim_step(
            s["x"],
            eps_model(s["x"], s["t"]),
            p.schedule.alpha_bar(s["t"]),
            p.schedule.alpha_bar(s["t_next"]),
        )
        torch.testing.assert_close(s["x_next"], ref.prev_sample, rtol=1e-10, atol=1e-10)


def test_cdtc_invariants_hold_for_the_solver():
    p = ring_problem()
    x_T = p.noise(1000, torch.Generator().manual_seed(1))
    plain = dpm_solver_sample(p.eps_model(), p.schedule, x_T, 20)
    top = dpm_solver_sample(
        p.eps_model(),
        p.schedule,
        x_T,
        20,
        guidance=SafeGuidance(p.density, 1.0, threshold=1.0),
        record=True,
    )
    never = ~top.ever_corrected  # P(harmful) rounds to 1.0 only deep inside a harmful mode
    assert never.float().mean() > 0.5
    assert torch.equal(plain.samples[never], top.samples[never])
    # γ scaled with the step count (the correction is applied once per step): 0.003 × 100 / 20
    safe = dpm_solver_sample(
        p.eps_model(),
        p.schedule,
        x_T,
        20,
        guidance=SafeGuidance(p.density, p.gamma * 5, p.threshold),
        record=True,
    )
    untouched = ~safe.ever_corrected
    assert torch.equal(safe.samples[untouched], plain.samples[untouched])
    before = metrics.harmful_rate(plain.samples, p.mixture, p.harmful)
    after = metrics.harmful_rate(safe.samples, p.mixture, p.harmful)
    assert before > 0.2 and after < before / 50


def test_bad_input():
    p = ring_problem()
    with pytest.raises(ValueError, match="order"):
        dpm_solver_sample(p.eps_model(), p.schedule, p.noise(2), 5, order=3)
    with pytest.raises(ValueError, match="num_steps"):
        dpm_solver_sample(p.eps_model(), p.schedule, p.noise(2), 0)
