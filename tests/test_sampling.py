"""DDIM: parity with diffusers' DDIMScheduler step by step, conversions, and the sampler loop."""

import pytest
import torch
from diffusers import DDIMScheduler

import safescore as ss
from safescore import NoiseSchedule, ddim_sample, ddim_step


def fake_eps_model(x, t):
    """A deterministic, non-trivial ε-model (B, C, H, W) -> (B, C, H, W)."""
    return torch.tanh(0.7 * x + 0.001 * float(t)) * 0.9 + 0.05 * x.roll(1, dims=-1)


CONFIGS = [
    dict(timestep_spacing="leading", steps_offset=0, set_alpha_to_one=True, beta_schedule="linear"),
    dict(
        timestep_spacing="leading",
        steps_offset=1,
        set_alpha_to_one=False,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
    ),
    dict(
        timestep_spacing="trailing",
        steps_offset=0,
        set_alpha_to_one=False,
        beta_schedule="squaredcos_cap_v2",
    ),
    dict(
        timestep_spacing="linspace", steps_offset=0, set_alpha_to_one=True, beta_schedule="linear"
    ),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_every_step_matches_diffusers_step(config, eta):
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, **config)
    schedule = NoiseSchedule.from_diffusers(sched)
    n = 20
    sched.set_timesteps(n)
    assert torch.equal(schedule.ddim_timesteps(n), sched.timesteps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for t in sched.timesteps:
        eps = fake_eps_model(x, int(t))
        noise = torch.randn(x.shape, generator=g)
        ref = sched.step(eps, t, x, eta=eta, variance_noise=noise)
        # diffusers always steps to t - T // n (see facts.md)
        t_prev = int(t) - 1000 // n
        ours = ddim_step(
            x,
            eps,
            schedule.alpha_bar(int(t)),
            schedule.alpha_bar(t_prev if t_prev >= 0 else -1),
            eta=eta,
            noise=noise,
        )
        assert torch.equal(ours.pred_original_sample, ref.pred_original_sample)
        assert torch.equal(ours.prev_sample, ref.prev_sample)
        x = ref.prev_sample


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_full_loop_matches_diffusers_with_same_generator(eta, spacing):
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing=spacing,
    )
    schedule = NoiseSchedule.from_diffusers(sched)
    x_T = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sched.set_timesteps(25)
    g_ref = torch.Generator().manual_seed(7)
    x = x_T
    for t in sched.timesteps:
        x = sched.step(fake_eps_model(x, int(t)), t, x, eta=eta, generator=g_ref).prev_sample
    ours = ddim_sample(
        fake_eps_model, schedule, x_T, 25, eta=eta, generator=torch.Generator().manual_seed(7)
    )
    assert torch.equal(ours.samples, x)


def test_conversions_are_consistent():
    torch.manual_seed(0)
    x_t, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    a = 0.37
    x0 = ss.predict_x0(x_t, eps, a)
    torch.testing.assert_close(ss.x0_to_eps(x_t, x0, a), eps)
    torch.testing.assert_close(ss.score_to_eps(ss.eps_to_score(eps, a), a), eps)
    torch.testing.assert_close(a**0.5 * x0 + (1 - a) ** 0.5 * eps, x_t)


def test_deterministic_ddim_inverts_a_point_mass():
    """With the exact ε of a point mass at c, one DDIM step of any size lands on c."""
    schedule = NoiseSchedule.linear()
    c = torch.tensor([[1.5, -0.5]], dtype=torch.float64)

    def eps_point(x, t):
        a = schedule.alpha_bar(t)
        return (x - a**0.5 * c) / (1 - a) ** 0.5

    x_T = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = ddim_sample(eps_point, schedule, x_T, 3)
    torch.testing.assert_close(out.samples, c.expand(4, 2), rtol=0, atol=1e-12)


def test_record_shapes_and_callback():
    schedule = NoiseSchedule.linear()
    seen = []
    x_T = torch.randn(6, 2, dtype=torch.float64)
    out = ddim_sample(lambda x, t: 0.1 * x, schedule, x_T, 8, record=True, callback=seen.append)
    assert out.trajectory.shape == (9, 6, 2) and torch.equal(out.trajectory[0], x_T)
    assert (
        out.x0_hats.shape == (8, 6, 2)
        and out.harm.shape == (8, 6)
        and out.corrected.shape == (8, 6)
    )
    assert torch.equal(out.trajectory[-1], out.samples)
    assert torch.isnan(out.harm).all() and not out.corrected.any()
    assert [d["i"] for d in seen] == list(range(8)) and seen[-1]["t_next"] == -1


def test_eta_noise_uses_generator_reproducibly():
    schedule = NoiseSchedule.linear()
    x_T = torch.randn(4, 2, dtype=torch.float64)
    a = ddim_sample(
        lambda x, t: 0.5 * x, schedule, x_T, 10, eta=1.0, generator=torch.Generator().manual_seed(3)
    )
    b = ddim_sample(
        lambda x, t: 0.5 * x, schedule, x_T, 10, eta=1.0, generator=torch.Generator().manual_seed(3)
    )
    c = ddim_sample(
        lambda x, t: 0.5 * x, schedule, x_T, 10, eta=1.0, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("eta", [-0.1, 1.5, "0.5", True])
def test_eta_outside_range(eta):
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(lambda x, t: x, NoiseSchedule.linear(), torch.zeros(2, 2), 5, eta=eta)


def test_num_steps_larger_than_train_timesteps():
    with pytest.raises(ValueError, match="num_steps"):
        ddim_sample(
            lambda x, t: x, NoiseSchedule.linear(num_train_timesteps=100), torch.zeros(2, 2), 101
        )


def test_eps_model_shape_mismatch():
    with pytest.raises(ValueError, match=r"eps_model must return a tensor of shape \(2, 2\)"):
        ddim_sample(lambda x, t: x[:, :1], NoiseSchedule.linear(), torch.zeros(2, 2), 5)


def test_non_finite_eps_names_the_step():
    def bad(x, t):
        return x * float("nan") if t < 500 else x

    with pytest.raises(FloatingPointError, match=r"step 5 \(t=400\)"):
        ddim_sample(bad, NoiseSchedule.linear(), torch.zeros(2, 2), 10)


def test_schedule_type_checked():
    with pytest.raises(TypeError, match="NoiseSchedule"):
        ddim_sample(lambda x, t: x, [0.9, 0.5], torch.zeros(2, 2), 2)


def test_ddim_step_shape_checks():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="eps"):
        ddim_step(x, torch.zeros(2, 2), 0.5, 0.6)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, x, 0.5, 0.6, eta=1.0, noise=torch.zeros(3))
    with pytest.raises(ValueError, match="alpha_bar_prev"):
        ddim_step(x, x, 0.5, 1.5)
