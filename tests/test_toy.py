"""Gaussian mixtures: closed forms against autograd, the exact ε-oracle, and the ready-made problems."""

import math

import pytest
import torch

from safescore import NoiseSchedule, ddim_sample, metrics
from safescore.toy import GaussianMixture, linear_manifold_problem, ring_problem


def random_mixture(d=3, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = A @ A.transpose(-1, -2) * 0.3 + 0.1 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(
        torch.randn(K, d, generator=g, dtype=torch.float64) * 2,
        covs,
        torch.rand(K, generator=g) + 0.2,
    )


def test_log_prob_matches_torch_distributions():
    m = random_mixture()
    x = torch.randn(50, 3, dtype=torch.float64)
    comps = torch.distributions.MultivariateNormal(m.means, covariance_matrix=m.covs)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=m.weights), comps
    )
    torch.testing.assert_close(m.log_prob(x), ref.log_prob(x))


def test_score_equals_autograd_of_log_prob():
    m = random_mixture()
    x = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(m.log_prob(x).sum(), x)
    torch.testing.assert_close(m.score(x.detach()), g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t", [0, 10, 250, 999])
def test_oracle_is_minus_sqrt_one_minus_alpha_times_autograd_score(t):
    m = random_mixture(d=2, K=3, seed=1)
    schedule = NoiseSchedule.cosine()
    a = schedule.alpha_bar(t)
    x = torch.randn(30, 2, dtype=torch.float64, requires_grad=True)
    # the noised mixture, built independently from its definition
    noised = GaussianMixture(
        math.sqrt(a) * m.means, a * m.covs + (1 - a) * torch.eye(2, dtype=torch.float64), m.weights
    )
    (score,) = torch.autograd.grad(noised.log_prob(x).sum(), x)
    eps = m.eps_model(schedule)(x.detach(), t)
    torch.testing.assert_close(eps, -math.sqrt(1 - a) * score, rtol=1e-10, atol=1e-12)


def test_ddim_with_the_oracle_reproduces_the_mixture():
    p = ring_problem()
    x_T = p.noise(4000, torch.Generator().manual_seed(0))
    x = ddim_sample(p.eps_model(), p.schedule, x_T, 100).samples
    ref = p.mixture.sample(4000, torch.Generator().manual_seed(1))
    ref2 = p.mixture.sample(4000, torch.Generator().manual_seed(2))
    # as close to the data as a second sample of the data is (up to a small factor)
    assert metrics.energy_distance(x, ref) < 3 * metrics.energy_distance(ref2, ref) + 2e-3
    labels = p.mixture.component_log_probs(x).argmax(-1)
    weights = torch.bincount(labels, minlength=8).double() / len(x)
    torch.testing.assert_close(weights, p.mixture.weights, atol=0.02, rtol=0)
    assert metrics.mode_coverage(x, p.mixture) == 1.0


def test_sample_statistics_and_labels():
    m = GaussianMixture([[0.0, 0.0], [10.0, 0.0]], [0.25, 1.0], [0.3, 0.7])
    x, lab = m.sample(20000, torch.Generator().manual_seed(0), return_labels=True)
    assert abs(lab.double().mean().item() - 0.7) < 0.02
    assert abs(x[lab == 1].std(0).mean().item() - 1.0) < 0.05
    assert abs(x[lab == 0].std(0).mean().item() - 0.5) < 0.03


def test_ring_problem_defaults():
    p = ring_problem()
    assert p.mixture.num_components == 8 and p.harmful.sum() == 2 and p.dim == 2
    probs = p.density.prob(p.mixture.means)
    assert torch.all(probs[p.harmful] > 0.99) and torch.all(probs[~p.harmful] < 0.01)
    assert p.safe_mixture.num_components == 6


def test_linear_manifold_data_lie_on_the_subspace():
    p = linear_manifold_problem(k=2, d=16)
    x = p.mixture.sample(500, torch.Generator().manual_seed(0))
    assert metrics.off_manifold_distance(x, p.basis).max() < 1e-12
    torch.testing.assert_close(p.decoder(p.encoder(x)), x)
    # the harm classifier's gradient has an off-manifold component (what ambient guidance follows)
    g = p.density.grad_log_prob(x[:10])
    assert metrics.off_manifold_distance(g, p.basis).min() > 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(means=[0.0, 1.0], covs=1.0), "means"),
        (dict(means=[[0.0, 1.0]], covs=[[1.0, 0.0]], weights=[-1.0]), "weights"),
        (dict(means=[[0.0, 1.0]], covs=[[[1.0, 2.0], [0.0, 1.0]]]), "symmetric"),
    ],
)
def test_mixture_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)


def test_problem_bad_input():
    with pytest.raises(ValueError, match="harmful"):
        ring_problem(harmful=(9,))
    with pytest.raises(ValueError, match="harmful"):
        ring_problem(n_modes=2, harmful=(0, 1))
    with pytest.raises(ValueError, match="d must be"):
        linear_manifold_problem(k=4, d=3)
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        ring_problem().mixture.log_prob(torch.zeros(3, 5))
