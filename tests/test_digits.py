"""Digits toy: data scaling, PCA autoencoder, classifier, log-odds harm density, ε-model trainer."""

import pytest
import torch

from safescore import NoiseSchedule
from safescore.densities import ClassifierDensity
from safescore.toy.digits import (
    LogOddsClassifierDensity,
    PCAAutoencoder,
    digit_harm_density,
    load_digits_data,
    predict_digits,
    train_digit_classifier,
    train_digit_eps_model,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits_data()


def test_load_digits_scaling(digits):
    x, y = digits
    assert x.shape == (1797, 64) and y.shape == (1797,) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))


def test_pca_autoencoder_projects(digits):
    x, _ = digits
    ae = PCAAutoencoder.fit(x.double(), 10)
    z = ae.encode(x.double())
    assert torch.allclose(z.std(0), torch.ones(10, dtype=torch.float64), atol=1e-10)  # whitened
    assert torch.allclose(ae.basis.T @ ae.basis, torch.eye(10, dtype=torch.float64), atol=1e-12)
    proj = ae(x.double())
    assert torch.allclose(ae(proj), proj, atol=1e-10)  # a projection is idempotent
    full = PCAAutoencoder.fit(x.double(), 64, whiten=False)
    assert torch.allclose(full(x.double()), x.double(), atol=1e-10)
    with pytest.raises(ValueError, match="k must be"):
        PCAAutoencoder.fit(x, 0)


def test_classifier_and_harm_density(digits):
    x, y = digits
    clf = train_digit_classifier(x, y, steps=60, seed=0)
    assert float((predict_digits(clf, x) == y).double().mean()) > 0.85
    dens = digit_harm_density(clf, 3)
    assert isinstance(dens, LogOddsClassifierDensity)
    p = dens.prob(x[:20])
    assert torch.allclose(p, torch.softmax(clf(x[:20]), -1)[:, 3])
    assert bool(((p >= 0) & (p <= 1)).all())
    # log_prob is the log-odds log p - log(1 - p) (checked in float64, where 1 - p is resolved)
    dens64, x64 = digit_harm_density(clf.double(), 3), x[:20].double()
    p64 = dens64.prob(x64)
    assert torch.allclose(dens64.log_prob(x64), torch.log(p64) - torch.log1p(-p64), atol=1e-6)
    assert isinstance(digit_harm_density(clf, 3, gradient="log_prob"), ClassifierDensity)
    with pytest.raises(ValueError, match="harmful_digit"):
        digit_harm_density(clf, 10)
    with pytest.raises(ValueError, match="gradient"):
        digit_harm_density(clf, 3, gradient="logit")


def test_trainers_are_seeded_and_leave_global_rng(digits):
    x, _ = digits
    state = torch.random.get_rng_state()
    m1, l1 = train_digit_eps_model(x[:200], NoiseSchedule.linear(), steps=5, hidden=16, seed=3)
    m2, l2 = train_digit_eps_model(x[:200], NoiseSchedule.linear(), steps=5, hidden=16, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert l1 == l2 and len(l1) == 5
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
