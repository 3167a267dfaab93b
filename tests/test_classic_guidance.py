"""Classifier guidance and classifier-free guidance on the ring toy."""

import pytest
import torch

from safescore import ddim_sample, toy
from safescore.toy.classic_guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    mixture_class_log_prob,
)


@pytest.fixture(scope="module")
def ring():
    return toy.ring_problem()


def _target(p, k=4):
    mask = torch.zeros(p.mixture.num_components, dtype=torch.bool)
    mask[k] = True
    return mask


def test_noisy_class_log_prob_matches_noised_posterior(ring):
    mask = _target(ring)
    lp = mixture_class_log_prob(ring.mixture, mask, ring.schedule)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = ring.mixture.noised(ring.schedule.alpha_bar(300)).responsibilities(x)
    assert torch.allclose(lp(x, 300).exp(), r[:, 4], atol=1e-12)


def test_classifier_guidance_scale_one_equals_conditional_model(ring):
    # Exact classifier, s = 1  ==  the exact conditional ε-model (Bayes' rule on scores).
    mask = _target(ring)
    x_T = ring.noise(200, torch.Generator().manual_seed(0))
    cg = ddim_sample(
        ring.eps_model(),
        ring.schedule,
        x_T,
        20,
        guidance=ClassifierGuidance(mixture_class_log_prob(ring.mixture, mask, ring.schedule), 1.0),
    )
    cond = ddim_sample(ring.mixture.subset(mask).eps_model(ring.schedule), ring.schedule, x_T, 20)
    assert torch.allclose(cg.samples, cond.samples, atol=1e-8)
    labels = ring.mixture.component_log_probs(cg.samples).argmax(-1)
    assert bool((labels == 4).all())


def test_negative_scale_steers_away(ring):
    mask = _target(ring)
    x_T = ring.noise(400, torch.Generator().manual_seed(1))
    r = ddim_sample(
        ring.eps_model(),
        ring.schedule,
        x_T,
        20,
        guidance=ClassifierGuidance(
            mixture_class_log_prob(ring.mixture, mask, ring.schedule), -2.0
        ),
    )
    labels = ring.mixture.component_log_probs(r.samples).argmax(-1)
    assert float((labels == 4).double().mean()) < 0.01


def test_cfg_interpolates_eps(ring):
    a, b = (lambda x, t: torch.ones_like(x)), (lambda x, t: torch.zeros_like(x))
    x = torch.zeros(3, 2)
    assert torch.equal(ClassifierFreeGuidance(a, b, 0.0)(x, 5), torch.zeros(3, 2))
    assert torch.equal(ClassifierFreeGuidance(a, b, 1.0)(x, 5), torch.ones(3, 2))
    assert torch.equal(ClassifierFreeGuidance(a, b, 3.0)(x, 5), torch.full((3, 2), 3.0))


def test_bad_arguments(ring):
    with pytest.raises(TypeError, match="scale"):
        ClassifierGuidance(lambda x, t: x.sum(-1), float("nan"))
    with pytest.raises(TypeError, match="log_prob"):
        ClassifierGuidance(None)
    with pytest.raises(TypeError, match="eps_cond"):
        ClassifierFreeGuidance(None, lambda x, t: x, 1.0)
    with pytest.raises(ValueError, match="class_mask"):
        mixture_class_log_prob(ring.mixture, torch.zeros(3, dtype=torch.bool), ring.schedule)
