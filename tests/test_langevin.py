"""Langevin samplers: stationarity on a Gaussian, annealing fixes mode weights, exact smoothed score."""

import pytest
import torch

from safescore import NoiseSchedule
from safescore.toy.gmm import GaussianMixture
from safescore.toy.langevin import (
    annealed_langevin_sample,
    annealed_step_sizes,
    eps_model_score,
    langevin_sample,
    mixture_smoothed_score,
)


def test_langevin_samples_a_gaussian():
    # Target N(m, s²): ULA with a small step reaches mean m and variance ≈ s² (bias O(step)).
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    gen = torch.Generator().manual_seed(0)
    x0 = torch.zeros(4000, 2, dtype=torch.float64)
    out = langevin_sample(
        lambda x: -(x - m) / s**2, x0, step_size=0.01, num_steps=400, generator=gen
    )
    assert torch.allclose(out.samples.mean(0), m, atol=0.03)
    assert torch.allclose(out.samples.var(0), torch.full((2,), s**2, dtype=torch.float64), rtol=0.1)


def test_langevin_is_seeded_and_records():
    score = lambda x: -x  # noqa: E731
    x0 = torch.zeros(5, 3)
    a = langevin_sample(
        score,
        x0,
        step_size=0.1,
        num_steps=6,
        generator=torch.Generator().manual_seed(1),
        record=True,
        record_every=2,
    )
    b = langevin_sample(
        score, x0, step_size=0.1, num_steps=6, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(a.samples, b.samples)
    assert a.trajectory.shape == (4, 5, 3) and torch.equal(a.trajectory[0], x0)
    assert b.trajectory is None


def test_smoothed_score_is_the_convolved_mixture_score():
    mix = GaussianMixture(torch.tensor([[0.0, 0.0], [3.0, 1.0]]), torch.tensor([0.2, 0.5]))
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = 0.7
    # autograd of the log-density of the convolved mixture, an independent route
    conv = GaussianMixture(
        mix.means, mix.covs + sigma**2 * torch.eye(2, dtype=torch.float64), mix.weights
    )
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(conv.log_prob(leaf).sum(), leaf)
    assert torch.allclose(mixture_smoothed_score(mix)(x, sigma), grad, atol=1e-12)


def test_annealing_recovers_mode_weights():
    two = GaussianMixture(
        torch.tensor([[-2.0, -2.0], [2.0, 2.0]]), 0.25, weights=torch.tensor([0.2, 0.8])
    )
    gen = torch.Generator().manual_seed(0)
    x0 = 8 * torch.rand(1000, 2, generator=gen, dtype=torch.float64) - 4
    sigmas = torch.logspace(0.5, -1.3, 8).tolist()
    out = annealed_langevin_sample(
        mixture_smoothed_score(two),
        x0,
        sigmas,
        annealed_step_sizes(sigmas, 5e-4),
        steps_per_level=30,
        generator=gen,
        record=True,
    )
    heavy = float(two.responsibilities(out.samples).argmax(-1).eq(1).double().mean())
    assert abs(heavy - 0.8) < 0.06
    assert out.trajectory.shape == (9, 1000, 2)


def test_annealed_step_sizes_follow_song_ermon():
    assert annealed_step_sizes([4.0, 2.0, 1.0], 0.1) == pytest.approx([1.6, 0.4, 0.1])


def test_eps_model_score_converts_eps():
    sched = NoiseSchedule.linear(100)
    score = eps_model_score(lambda x, t: torch.ones_like(x), sched)
    a = sched.alpha_bar(10)
    assert torch.allclose(score(torch.zeros(2, 2), 10), torch.full((2, 2), -1 / (1 - a) ** 0.5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step_size=0.0, num_steps=1), "step_size"),
        (dict(step_size=0.1, num_steps=0), "num_steps"),
        (dict(step_size=0.1, num_steps=1, record_every=0), "record_every"),
    ],
)
def test_langevin_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        langevin_sample(lambda x: -x, torch.zeros(2, 2), **kwargs)


def test_annealed_rejects_mismatched_levels_and_bad_scores():
    with pytest.raises(ValueError, match="equal length"):
        annealed_langevin_sample(
            lambda x, s: -x, torch.zeros(2, 2), [1.0, 0.5], [0.1], steps_per_level=1
        )
    with pytest.raises(ValueError, match="shape of x"):
        langevin_sample(lambda x: x[:, :1], torch.zeros(2, 2), step_size=0.1, num_steps=1)
