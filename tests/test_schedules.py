"""NoiseSchedule: betas, alphas_cumprod and DDIM timesteps against diffusers' DDIMScheduler."""

import pytest
import torch
from diffusers import DDIMScheduler

from safescore import NoiseSchedule


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("n", [1, 7, 10, 50, 333, 1000])
def test_ddim_timesteps_match_diffusers(spacing, offset, n):
    sched = DDIMScheduler(
        num_train_timesteps=1000,
        timestep_spacing=spacing,
        steps_offset=offset,
        beta_schedule="linear",
    )
    if spacing == "leading" and offset == 1 and n == 1000:
        pytest.skip("diffusers itself goes past T-1 here; we raise instead (tested below)")
    sched.set_timesteps(n)
    ours = NoiseSchedule.from_diffusers(sched).ddim_timesteps(n)
    assert torch.equal(ours, sched.timesteps.to(torch.int64))


def test_offset_past_the_end_is_an_error():
    s = NoiseSchedule.linear(steps_offset=1)
    with pytest.raises(ValueError, match="steps_offset"):
        s.ddim_timesteps(1000)


@pytest.mark.parametrize(
    "ours, kwargs",
    [
        (NoiseSchedule.linear, {"beta_schedule": "linear"}),
        (
            NoiseSchedule.scaled_linear,
            {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        ),
        (NoiseSchedule.cosine, {"beta_schedule": "squaredcos_cap_v2"}),
    ],
)
def test_constructors_match_diffusers_betas(ours, kwargs):
    sched = DDIMScheduler(num_train_timesteps=1000, **kwargs)
    s = ours()
    assert s.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(s.betas, sched.betas.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(
        s.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-5, atol=1e-6
    )


def test_from_diffusers_copies_config_and_alphas_exactly():
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    s = NoiseSchedule.from_diffusers(sched)
    assert torch.equal(s.alphas_cumprod.float(), sched.alphas_cumprod)
    assert s.final_alpha_cumprod == float(sched.final_alpha_cumprod)
    assert s.steps_offset == 1 and s.timestep_spacing == "leading" and not s.set_alpha_to_one
    assert s.alpha_bar(-1) == float(sched.alphas_cumprod[0])


def test_from_betas_is_cumprod_in_float64():
    b = torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)
    s = NoiseSchedule.from_betas(b)
    assert torch.equal(s.alphas_cumprod, torch.cumprod(1 - b, 0))
    assert (s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all()
    assert s.alpha_bar(-1) == 1.0


def test_timestep_pairs_end_at_clean():
    pairs = NoiseSchedule.linear().timestep_pairs(10)
    assert pairs[0] == (900, 800) and pairs[-1] == (0, -1)


@pytest.mark.parametrize("bad", [0, -3, 1001])
def test_num_steps_out_of_range(bad):
    with pytest.raises(ValueError, match="num_steps"):
        NoiseSchedule.linear().ddim_timesteps(bad)


def test_num_steps_type():
    with pytest.raises(TypeError, match="num_steps"):
        NoiseSchedule.linear().ddim_timesteps(2.5)


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="timestep_spacing"):
        NoiseSchedule.linear(timestep_spacing="even")
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule.from_betas([0.1, 1.5])
    with pytest.raises(ValueError, match="beta_end"):
        NoiseSchedule.linear(beta_start=0.02, beta_end=0.01)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        NoiseSchedule([0.5, 0.9])
    with pytest.raises(TypeError, match="scheduler"):
        NoiseSchedule.from_diffusers(object())
