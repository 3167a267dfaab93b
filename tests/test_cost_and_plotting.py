"""Guidance cost measurement and the notebook figures."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from safescore import NegativeGuidance, SafeGuidance, ddim_sample, plotting, toy  # noqa: E402
from safescore.toy.cost import measure_guidance_cost  # noqa: E402
from safescore.toy.nets import ScoreMLP  # noqa: E402


@pytest.fixture(scope="module")
def ring():
    return toy.ring_problem()


def test_xt_gradient_saves_the_models_activations(ring):
    mlp = ScoreMLP(2, hidden=64, num_layers=2).double()
    x_T = ring.noise(32, torch.Generator().manual_seed(0))
    plain = measure_guidance_cost(mlp, ring.schedule, x_T, 3, None, repeats=1)
    x0 = measure_guidance_cost(
        mlp, ring.schedule, x_T, 3, SafeGuidance(ring.density, 1e-4), repeats=1
    )
    xt = measure_guidance_cost(
        mlp, ring.schedule, x_T, 3, NegativeGuidance(ring.density, 1e-4), repeats=1
    )
    assert plain.peak_saved_bytes == 0
    assert x0.peak_saved_bytes > 0
    # x_t adds at least the hidden activations of the MLP: 2 layers × (B, 64) float64, before and after SiLU
    assert xt.peak_saved_bytes >= x0.peak_saved_bytes + 2 * 32 * 64 * 8
    assert xt.seconds_per_step > 0
    with pytest.raises(ValueError, match="repeats"):
        measure_guidance_cost(mlp, ring.schedule, x_T, 3, None, repeats=0)


def test_figures(ring):
    x_T = ring.noise(16, torch.Generator().manual_seed(0))
    res = {
        "plain": ddim_sample(ring.eps_model(), ring.schedule, x_T, 5, record=True),
        "safe": ddim_sample(
            ring.eps_model(),
            ring.schedule,
            x_T,
            5,
            guidance=SafeGuidance(ring.density, ring.gamma, ring.threshold),
            record=True,
        ),
    }
    fig = plotting.plot_guidance_paths(res, mixture=ring.mixture, harmful=ring.harmful, n=8)
    assert len(fig.axes) == 3  # two panels and a colour bar
    fig = plotting.plot_score_fields(ring.mixture.score, ring.mixture.score, grid=11, quiver_grid=5)
    assert fig.axes[2].images[0].get_array().max() == 0.0  # identical scores, zero error
    fig = plotting.plot_tradeoff({"a": ([0.1, 0.2], [0.3, 0.1], [1.0, 2.0])})
    assert len(fig.axes[0].lines) == 1
    fig = plotting.plot_image_grid(torch.zeros(12, 64), nrow=5, labels=torch.arange(12))
    assert fig.axes[0].images[0].get_array().shape == (3 * 9 + 1, 5 * 9 + 1)
    with pytest.raises(ValueError, match="images"):
        plotting.plot_image_grid(torch.zeros(3, 10))
    with pytest.raises(ValueError, match="record=True"):
        plotting.plot_guidance_paths(
            {"x": ddim_sample(ring.eps_model(), ring.schedule, x_T, 2)},
            mixture=ring.mixture,
            harmful=ring.harmful,
        )
