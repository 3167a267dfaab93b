"""Denoising score matching: a ScoreMLP trained for a few seconds samples close to the ring."""

import pytest
import torch

from safescore import ddim_sample, metrics
from safescore.toy import ring_problem
from safescore.toy.nets import ScoreMLP
from safescore.toy.training import train_dsm


def test_dsm_trained_model_samples_close_to_the_data():
    p = ring_problem()
    torch.manual_seed(0)
    model = ScoreMLP(2, hidden=128, num_layers=3)
    data = p.mixture.sample(10000, torch.Generator().manual_seed(1))
    losses = train_dsm(model, data, p.schedule, steps=1500, batch_size=256, seed=0, progress=False)
    assert sum(losses[-100:]) / 100 < 0.6 * sum(losses[:100]) / 100
    x_T = p.noise(2000, torch.Generator().manual_seed(2)).float()
    with torch.no_grad():
        x = ddim_sample(model, p.schedule, x_T, 50).samples.double()
    ref = p.mixture.sample(2000, torch.Generator().manual_seed(3))
    assert metrics.energy_distance(x, ref) < 0.05
    assert metrics.mode_coverage(x, p.mixture) >= 7 / 8
    # far closer to the data than the Gaussian it started from
    assert metrics.energy_distance(x, ref) < 0.1 * metrics.energy_distance(x_T.double(), ref)


def test_score_mlp_shapes_and_timestep_forms():
    m = ScoreMLP(3, hidden=16, num_layers=2, time_embed_dim=8)
    x = torch.randn(5, 3)
    a = m(x, 10)
    b = m(x, torch.full((5,), 10))
    assert a.shape == (5, 3) and torch.equal(a, b)
    assert m(x.double(), 10).dtype == torch.float64
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 3\)"):
        m(torch.randn(5, 2), 1)


def test_train_dsm_is_reproducible_and_checks_input():
    p = ring_problem()
    data = p.mixture.sample(500, torch.Generator().manual_seed(0))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = ScoreMLP(2, hidden=16, num_layers=1)
        runs.append(train_dsm(m, data, p.schedule, steps=20, seed=3, progress=False))
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="steps"):
        train_dsm(m, data, p.schedule, steps=0)
    with pytest.raises(ValueError, match="data"):
        train_dsm(m, data[:, 0], p.schedule, steps=1)
    with pytest.raises(ValueError, match="lr"):
        train_dsm(m, data, p.schedule, steps=1, lr=-1.0)
