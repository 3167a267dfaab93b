"""One guidance site for every solver: DDIM, DPM-Solver++ and SafeDDIMScheduler consult guidance
the same way, and an ε-editing guidance (NegativeGuidance, classifier guidance) is handled by
every solver, not silently turned into an x̂0 correction."""

from __future__ import annotations

import torch

import safescore as ss
from safescore.toy import ring_problem
from safescore.toy.classic_guidance import ClassifierGuidance


def _ring():
    p = ring_problem()
    x_T = p.noise(400, torch.Generator().manual_seed(0))
    return p, x_T


def _dpm_grid(p, n):
    return [int(t) for t in ss.core.dpm_solver_timesteps(p.schedule, n)]


def test_dpm_order_1_equals_ddim_on_the_same_timesteps_plain():
    p, x_T = _ring()
    ts = _dpm_grid(p, 10)
    ddim = ss.sample(p.eps_model(), p.schedule, x_T, timesteps=ts, solver="ddim")
    dpm = ss.sample(p.eps_model(), p.schedule, x_T, timesteps=ts, solver="dpm++2m", order=1)
    torch.testing.assert_close(dpm.samples, ddim.samples, rtol=1e-9, atol=1e-9)


def test_dpm_order_1_with_negative_guidance_equals_ddim_with_negative_guidance():
    p, x_T = _ring()
    ts = _dpm_grid(p, 10)
    guidance = ss.NegativeGuidance(p.density, 0.03, threshold=p.threshold)
    ddim = ss.sample(p.eps_model(), p.schedule, x_T, timesteps=ts, guidance=guidance, record=True)
    dpm = ss.sample(
        p.eps_model(),
        p.schedule,
        x_T,
        timesteps=ts,
        solver="dpm++2m",
        order=1,
        guidance=guidance,
        record=True,
    )
    assert ddim.corrected.any()  # the guidance did act
    torch.testing.assert_close(dpm.samples, ddim.samples, rtol=1e-8, atol=1e-8)
    # and it is not the x̂0-only reading of the guided ε (the drift this contract closes)
    plain = ss.sample(p.eps_model(), p.schedule, x_T, timesteps=ts)
    assert (dpm.samples - plain.samples).abs().max() > 1e-3


def test_dpm_order_1_with_safe_guidance_equals_ddim_with_safe_guidance():
    p, x_T = _ring()
    ts = _dpm_grid(p, 10)
    guidance = ss.SafeGuidance(p.density, p.gamma * 10, p.threshold)
    ddim = ss.sample(p.eps_model(), p.schedule, x_T, timesteps=ts, guidance=guidance, record=True)
    dpm = ss.sample(
        p.eps_model(), p.schedule, x_T, timesteps=ts, solver="dpm++2m", order=1, guidance=guidance
    )
    assert ddim.corrected.any()
    torch.testing.assert_close(dpm.samples, ddim.samples, rtol=1e-8, atol=1e-8)


def test_classifier_guidance_is_an_eps_edit_for_both_solvers():
    p, x_T = _ring()
    ts = _dpm_grid(p, 8)
    harmful = p.mixture.subset(p.harmful)

    def log_p_y(x, t):  # log of the harmful sub-mixture at the noised level: an ε edit
        return harmful.noised(p.schedule.alpha_bar(t)).log_prob(x)

    guidance = ClassifierGuidance(log_p_y, scale=0.5)
    ddim = ss.sample(p.eps_model(), p.schedule, x_T, timesteps=ts, guidance=guidance)
    dpm = ss.sample(
        p.eps_model(), p.schedule, x_T, timesteps=ts, solver="dpm++2m", order=1, guidance=guidance
    )
    torch.testing.assert_close(dpm.samples, ddim.samples, rtol=1e-8, atol=1e-8)


def test_the_scheduler_uses_the_core_site_and_step():
    """SafeDDIMScheduler.step with a guidance equals the core DDIM step on the guided x̂0."""
    from safescore.sd import SafeDDIMScheduler
    from safescore.sd.tiny import ddim_scheduler

    seen = []

    class Shift:  # x̂0-space guidance moving every sample by -0.5
        def __call__(self, state):
            seen.append(state.step_index)
            B = state.x0_hat.shape[0]
            ones = torch.ones(B, dtype=torch.bool)
            return ss.core.GuidanceOutput(state.eps, state.x0_hat - 0.5, torch.zeros(B), ones)

    sched = SafeDDIMScheduler.from_scheduler(ddim_scheduler())
    sched.guidance = Shift()
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = sched.timesteps[3]
    out = sched.step(eps, t, x)
    a_t, a_prev = sched.alphas_cumprod[t], sched.alphas_cumprod[t - 100]
    x0 = ss.predict_x0(x, eps, a_t) - 0.5
    ref = ss.ddim_step(x, eps, a_t, a_prev, x0_hat=x0)
    assert seen == [3]
    torch.testing.assert_close(out.prev_sample, ref.prev_sample)
    torch.testing.assert_close(out.pred_original_sample, x0)


def test_a_denoiser_differentiating_guidance_needs_the_eps_model():
    p, x_T = _ring()
    guidance = ss.NegativeGuidance(p.density, 0.03)
    eps = p.eps_model()(x_T, 500)
    try:
        ss.predict_and_guide(x_T, 500, p.schedule.alpha_bar(500), eps=eps, guidance=guidance)
    except ValueError as err:
        assert "differentiates through the eps_model" in str(err)
    else:  # pragma: no cover
        raise AssertionError("NegativeGuidance without an eps_model was accepted")
