"""γ_t = γ · ᾱ_t^power (`safescore.signal_scaled`), the mini model's safe-sampling schedule."""

import math

import pytest
import torch

from safescore import SafeGuidance, ddim_sample, signal_scaled
from safescore.toy import ring_problem


def test_values_follow_alpha_bar():
    abar = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    g = signal_scaled(3000.0, abar)
    for t in (0, 17, 500, 999):
        assert g(0, t, 25) == pytest.approx(3000.0 * math.sqrt(float(abar[t])), rel=1e-15)
    assert signal_scaled(2.0, abar, power=1.0)(3, 999) == pytest.approx(2.0 * 0.01)
    assert signal_scaled(2.0, abar, power=0.0)(3, 999) == 2.0  # power 0: constant γ
    assert "alphas_cumprod" not in repr(g)  # the 1000 numbers stay out of the repr


def test_bad_input():
    abar = [0.9, 0.5]
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        signal_scaled(-1.0, abar)
    with pytest.raises(ValueError, match="power must be >= 0"):
        signal_scaled(1.0, abar, power=-0.5)
    with pytest.raises(ValueError, match=r"alphas_cumprod must be .* in \(0, 1\]"):
        signal_scaled(1.0, [0.9, 1.5])
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        signal_scaled(1.0, abar)(0, 2)


def test_in_the_sampler_it_equals_the_same_callable():
    problem = ring_problem()
    abar = [problem.schedule.alpha_bar(t) for t in range(problem.schedule.num_train_timesteps)]
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def run(gamma):
        guidance = SafeGuidance(problem.density, gamma, threshold=0.5)
        return ddim_sample(
            problem.eps_model(), problem.schedule, x_T, 20, guidance=guidance
        ).samples

    by_hand = run(lambda step, t: 0.03 * abar[int(t)] ** 0.5)
    assert not torch.equal(by_hand, run(0.0))  # the schedule corrects something
    torch.testing.assert_close(run(signal_scaled(0.03, abar)), by_hand, rtol=0, atol=0)
