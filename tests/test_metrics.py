"""Metrics on known answers."""

import pytest
import torch

from safescore import metrics
from safescore.toy import GaussianMixture


def test_energy_distance_zero_for_same_sample_and_positive_for_shift():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.energy_distance(x, x + 3.0) > 2.0
    assert metrics.mmd(x, x) == pytest.approx(0.0, abs=1e-12) and metrics.mmd(x, x + 3.0) > 0.1


def test_harmful_rate_mode_coverage_and_distances():
    m = GaussianMixture([[0.0, 0.0], [10.0, 0.0]], 0.01)
    x = torch.tensor([[0.1, 0.0], [9.9, 0.0], [10.2, 0.0], [10.0, 0.1]], dtype=torch.float64)
    assert metrics.harmful_rate(x, m, [False, True]) == 0.75
    assert metrics.mode_coverage(x, m) == 1.0 and metrics.mode_coverage(x[1:], m) == 0.5
    torch.testing.assert_close(
        metrics.distance_to_modes(x, m), torch.tensor([0.1, 0.1, 0.2, 0.1], dtype=torch.float64)
    )


def test_off_manifold_distance_and_unchanged():
    U = torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float64)
    x = torch.tensor([[5.0, 3.0, 4.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        metrics.off_manifold_distance(x, U), torch.tensor([5.0, 0.0], dtype=torch.float64)
    )
    y = x.clone()
    y[1, 0] = torch.nextafter(y[1, 0], torch.tensor(2.0, dtype=torch.float64))  # one ulp
    assert metrics.unchanged_mask(x, y).tolist() == [True, False]
    assert metrics.unchanged_fraction(x, x) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        metrics.unchanged_fraction(x, x[:1])
