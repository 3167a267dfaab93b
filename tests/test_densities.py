"""Harm densities: values, normalisation and gradients."""

import math

import pytest
import torch

from safescore.densities import (
    ClassifierDensity,
    DecodedDensity,
    GaussianMixtureDensity,
    HarmPosteriorDensity,
    LogisticHarmDensity,
)
from safescore.toy import GaussianMixture, ring_problem


def test_gaussian_mixture_density_is_the_normal_density():
    d = GaussianMixtureDensity([[1.0, -1.0]], 0.5)
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0], dtype=torch.float64), 0.5 * torch.eye(2, dtype=torch.float64)
    )
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(d.prob(x), ref.log_prob(x).exp())
    torch.testing.assert_close(
        d.grad_log_prob(x), -(x - torch.tensor([1.0, -1.0], dtype=torch.float64)) / 0.5
    )


def test_posterior_is_bayes_rule_in_unit_interval():
    m = GaussianMixture([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]], 0.5, [0.2, 0.3, 0.5])
    d = HarmPosteriorDensity(m, [True, False, True])
    x = torch.randn(100, 2, dtype=torch.float64) * 3
    comp = torch.stack(
        [
            m.weights[k]
            * torch.distributions.MultivariateNormal(m.means[k], m.covs[k]).log_prob(x).exp()
            for k in range(3)
        ],
        -1,
    )
    ref = (comp[:, 0] + comp[:, 2]) / comp.sum(-1)
    torch.testing.assert_close(d.prob(x), ref)
    assert ((d.prob(x) >= 0) & (d.prob(x) <= 1)).all()
    # default gradient: log of the harmful sub-mixture; "posterior": log P(harmful | x)
    torch.testing.assert_close(d.log_prob(x).exp(), comp[:, 0] + comp[:, 2])
    dp = HarmPosteriorDensity(m, [True, False, True], gradient="posterior")
    torch.testing.assert_close(dp.log_prob(x), ref.log())


def test_classifier_density_three_outputs_agree():
    lin = torch.nn.Linear(3, 2).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    logits = ClassifierDensity(lin, output="logits", harmful_class=1)
    logit = ClassifierDensity(lambda z: lin(z)[:, 1] - lin(z)[:, 0], output="logit")
    prob = ClassifierDensity(lambda z: torch.softmax(lin(z), -1)[:, 1], output="prob")
    for d in (logit, prob):
        torch.testing.assert_close(d.prob(x), logits.prob(x))
        torch.testing.assert_close(d.log_prob(x), logits.log_prob(x))
        torch.testing.assert_close(d.grad_log_prob(x), logits.grad_log_prob(x))


def test_classifier_density_prob_zero_is_finite():
    d = ClassifierDensity(lambda z: torch.zeros(z.shape[0], dtype=z.dtype), output="prob")
    assert torch.isfinite(d.log_prob(torch.zeros(2, 2))).all()


def test_logistic_and_decoded_density():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64)
    d = LogisticHarmDensity(w, bias=0.5)
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(d.prob(x), torch.sigmoid(x @ w + 0.5))
    U = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    dec = DecodedDensity(d, lambda z: z @ U.T)
    z = torch.randn(4, 1, dtype=torch.float64)
    # chain rule: ∇_z log p(Uz) = Uᵀ ∇_x log p(x)
    torch.testing.assert_close(dec.grad_log_prob(z), d.grad_log_prob(z @ U.T) @ U)


def test_density_bad_input():
    m = ring_problem().mixture
    with pytest.raises(ValueError, match="harmful"):
        HarmPosteriorDensity(m, [True] * 8)
    with pytest.raises(ValueError, match="gradient"):
        HarmPosteriorDensity(m, [True] + [False] * 7, gradient="sideways")
    with pytest.raises(ValueError, match="output"):
        ClassifierDensity(lambda x: x, output="probs")
    with pytest.raises(ValueError, match="harmful_class"):
        ClassifierDensity(lambda x: x, output="logits")
    with pytest.raises(TypeError, match="classifier"):
        ClassifierDensity(3)
    assert math.isclose(
        float(GaussianMixtureDensity([[0.0]], 1.0).prob(torch.zeros(1, 1))),
        1 / math.sqrt(2 * math.pi),
    )
