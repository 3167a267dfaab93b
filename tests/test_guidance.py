"""SafeGuidance (x̂0 space, CDTC) and NegativeGuidance (x_t space): invariants and effects."""

import pytest
import torch

import safescore as ss
from safescore import NegativeGuidance, SafeGuidance, ddim_sample, metrics
from safescore.densities import HarmDensity
from safescore.toy import linear_manifold_problem, ring_problem


@pytest.fixture(scope="module")
def ring():
    return ring_problem()


@pytest.fixture(scope="module")
def noise(ring):
    return ring.noise(2000, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def plain(ring, noise):
    return ddim_sample(ring.eps_model(), ring.schedule, noise, 50, record=True)


class CountingDensity(HarmDensity):
    """Wraps a density and counts prob / log_prob calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.prob_calls, self.log_prob_calls, self.log_prob_rows = inner, 0, 0, 0

    def prob(self, x):
        self.prob_calls += 1
        return self.inner.prob(x)

    def log_prob(self, x):
        self.log_prob_calls += 1
        self.log_prob_rows += x.shape[0]
        return self.inner.log_prob(x)


def test_threshold_above_every_value_is_bit_for_bit_plain(ring, noise, plain):
    density = CountingDensity(ring.density)
    out = ddim_sample(
        ring.eps_model(),
        ring.schedule,
        noise,
        50,
        guidance=SafeGuidance(density, 10.0, threshold=1.01),
        record=True,
    )
    assert torch.equal(out.samples, plain.samples)
    assert torch.equal(out.trajectory, plain.trajectory)
    assert not out.corrected.any()
    assert density.prob_calls == 50 and density.log_prob_calls == 0  # no gradient ever computed


def test_never_corrected_samples_are_bit_for_bit_plain(ring, noise, plain):
    guidance = SafeGuidance(ring.density, ring.gamma, ring.threshold)
    out = ddim_sample(ring.eps_model(), ring.schedule, noise, 50, guidance=guidance, record=True)
    never = ~out.ever_corrected
    assert 0.5 < never.double().mean() < 0.95  # a mixed batch
    assert torch.equal(out.samples[never], plain.samples[never])
    assert torch.equal(metrics.unchanged_mask(out.samples, plain.samples), never)


def test_only_passing_samples_are_differentiated(ring, noise):
    density = CountingDensity(ring.density)
    out = ddim_sample(
        ring.eps_model(),
        ring.schedule,
        noise,
        50,
        guidance=SafeGuidance(density, ring.gamma, ring.threshold),
        record=True,
    )
    assert density.log_prob_rows == int(out.corrected.sum())
    # harm recorded is p_h(x̂0) before correction, and the mask is exactly harm >= threshold
    assert torch.equal(out.corrected, out.harm >= ring.threshold)


def test_safe_sampling_removes_harm_and_stays_near_safe_data(ring, noise, plain):
    out = ddim_sample(
        ring.eps_model(),
        ring.schedule,
        noise,
        100,
        guidance=SafeGuidance(ring.density, ring.gamma, ring.threshold),
    )
    before = metrics.harmful_rate(plain.samples, ring.mixture, ring.harmful)
    after = metrics.harmful_rate(out.samples, ring.mixture, ring.harmful)
    assert before > 0.2 and after < before / 50
    ref = ring.safe_mixture.sample(2000, torch.Generator().manual_seed(5))
    assert metrics.energy_distance(out.samples, ref) < 0.05
    assert metrics.energy_distance(plain.samples, ref) > 0.1  # plain has the harmful modes


def test_correct_is_exactly_the_x0_step():
    density = ss.densities.GaussianMixtureDensity([[0.0, 0.0]], 1.0)
    x0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    c = SafeGuidance(density, 0.25).correct(x0)
    # ∇ log N(x; 0, I) = -x, so x̂0 <- x̂0 + γ x̂0
    torch.testing.assert_close(c.x0_hat, 1.25 * x0)
    assert c.corrected.all()


def test_gamma_schedules():
    assert ss.constant(2.0)(5, 100, 10) == 2.0
    ramp = ss.linear_ramp(0.0, 1.0)
    assert (
        ramp(0, 999, 11) == 0.0
        and ramp(10, 0, 11) == 1.0
        and ramp(5, 500, 11) == pytest.approx(0.5)
    )
    w = ss.window(3.0, 0.25, 0.5)
    assert [w(i, 0, 9) for i in range(9)] == [0, 0, 3.0, 3.0, 3.0, 0, 0, 0, 0]


def test_window_evaluates_nothing_outside(ring, noise, plain):
    density = CountingDensity(ring.density)
    g = SafeGuidance(density, ss.window(ring.gamma, 0.2, 0.6), ring.threshold)
    out = ddim_sample(ring.eps_model(), ring.schedule, noise, 50, guidance=g, record=True)
    inside = torch.tensor([0.2 <= i / 49 <= 0.6 for i in range(50)])
    assert density.prob_calls == int(inside.sum())
    assert not out.corrected[~inside].any() and torch.isnan(out.harm[~inside]).all()


def test_plain_callable_gamma_and_check_every(ring, noise):
    seen = []

    def gamma(step, t):
        seen.append((step, t))
        return ring.gamma

    out = ddim_sample(
        ring.eps_model(),
        ring.schedule,
        noise[:10],
        10,
        guidance=SafeGuidance(ring.density, gamma, 0.5, check_every=3),
        record=True,
    )
    assert [s for s, _ in seen] == list(range(10))
    checked = ~torch.isnan(out.harm[:, 0])
    assert checked.tolist() == [i % 3 == 0 for i in range(10)]


class RecordingEps:
    """An ε-model that records whether autograd was on and whether x_t required grad."""

    def __init__(self, inner):
        self.inner, self.grad_enabled, self.input_requires_grad = inner, [], []

    def __call__(self, x, t):
        self.grad_enabled.append(torch.is_grad_enabled())
        self.input_requires_grad.append(x.requires_grad)
        return self.inner(x, t)


def test_safe_guidance_never_differentiates_the_eps_model(ring, noise):
    eps = RecordingEps(ring.eps_model())
    ddim_sample(
        eps, ring.schedule, noise[:200], 20, guidance=SafeGuidance(ring.density, ring.gamma)
    )
    assert not any(eps.grad_enabled) and not any(eps.input_requires_grad)


def test_negative_guidance_backpropagates_through_the_eps_model(ring, noise):
    eps = RecordingEps(ring.eps_model())
    out = ddim_sample(
        eps,
        ring.schedule,
        noise[:500],
        20,
        guidance=NegativeGuidance(ring.density, ring.negative_gamma),
        record=True,
    )
    assert all(eps.grad_enabled) and all(eps.input_requires_grad) and len(eps.grad_enabled) == 20
    assert out.corrected.all()
    assert metrics.harmful_rate(out.samples, ring.mixture, ring.harmful) < 0.05


def test_negative_guidance_is_the_eps_shift():
    """ε_new = ε + γ sqrt(1-ᾱ) ∇_{x_t} log p_h(x̂0(x_t)), checked against autograd by hand."""
    p = ring_problem()
    eps_model = p.eps_model()
    x_t = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t, a = 600, p.schedule.alpha_bar(600)
    state = ss.core.GuidanceState(x_t, t, 500, 0, 10, a, None, None, eps_model)
    out = NegativeGuidance(p.density, 0.1)(state)
    x = x_t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.density.log_prob(ss.predict_x0(x, eps_model(x, t), a)).sum(), x)
    torch.testing.assert_close(out.eps, eps_model(x_t, t) + 0.1 * (1 - a) ** 0.5 * g)
    torch.testing.assert_close(out.x0_hat, ss.predict_x0(x_t, out.eps, a))


def test_latent_guidance_stays_on_the_linear_manifold():
    p = linear_manifold_problem(k=2, d=16)
    x_T = p.noise(400, torch.Generator().manual_seed(0))
    eps = p.eps_model()
    n = 40
    plain = ddim_sample(eps, p.schedule, x_T, n)
    latent = ddim_sample(
        eps,
        p.schedule,
        x_T,
        n,
        guidance=SafeGuidance(
            p.density, p.gamma, p.threshold, encoder=p.encoder, decoder=p.decoder
        ),
    )
    ambient = ddim_sample(
        eps, p.schedule, x_T, n, guidance=SafeGuidance(p.density, p.gamma, p.threshold)
    )
    negative = ddim_sample(
        eps, p.schedule, x_T, n, guidance=NegativeGuidance(p.density, p.negative_gamma, p.threshold)
    )
    off = {
        k: metrics.off_manifold_distance(r.samples, p.basis)
        for k, r in dict(plain=plain, latent=latent, ambient=ambient, negative=negative).items()
    }
    print({k: (v.mean().item(), v.max().item()) for k, v in off.items()})  # reported, not asserted
    assert off["latent"].max() < 1e-10  # float precision
    assert off["plain"].max() < 1e-6
    assert metrics.harmful_rate(latent.samples, p.latent_mixture, p.harmful, x_is=p.encoder) < 0.02


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "gamma, err", [(-1.0, ValueError), (float("nan"), TypeError), ("big", TypeError)]
)
def test_bad_gamma(ring, gamma, err):
    with pytest.raises(err, match="gamma"):
        SafeGuidance(ring.density, gamma)
    with pytest.raises(err, match="gamma"):
        NegativeGuidance(ring.density, gamma)


@pytest.mark.parametrize("threshold", ["0.5", True, float("inf")])
def test_bad_threshold(ring, threshold):
    with pytest.raises(TypeError, match="threshold"):
        SafeGuidance(ring.density, 1.0, threshold)


def test_schedule_giving_negative_gamma_names_the_step(ring, noise):
    g = SafeGuidance(ring.density, lambda i, t: 1.0 if i < 3 else -1.0, 0.5)
    with pytest.raises(ValueError, match="gamma must be >= 0, got -1.0 at step 3"):
        ddim_sample(ring.eps_model(), ring.schedule, noise[:5], 10, guidance=g)


def test_bad_density_and_options(ring):
    with pytest.raises(TypeError, match="density"):
        SafeGuidance(object(), 1.0)
    with pytest.raises(ValueError, match="check_every"):
        SafeGuidance(ring.density, 1.0, check_every=0)
    with pytest.raises(ValueError, match="encoder and decoder"):
        SafeGuidance(ring.density, 1.0, encoder=lambda x: x)
    with pytest.raises(ValueError, match="window|end"):
        ss.window(1.0, 0.8, 0.2)


def test_non_finite_density_names_the_step(ring, noise):
    class NaNDensity(HarmDensity):
        def prob(self, x):
            return torch.full((x.shape[0],), float("nan"), dtype=x.dtype)

        def log_prob(self, x):
            return x.sum(-1)

    with pytest.raises(FloatingPointError, match="step 0"):
        ddim_sample(
            ring.eps_model(), ring.schedule, noise[:4], 5, guidance=SafeGuidance(NaNDensity(), 1.0)
        )


def test_safe_without_cdtc_diverges_on_the_analytic_density(ring, noise):
    """The facts' warning, as a property: without the threshold the harmful-mode log-density
    gradient grows with distance and the correction blows up."""
    out = ddim_sample(
        ring.eps_model(),
        ring.schedule,
        noise[:200],
        50,
        guidance=SafeGuidance(ring.density, ring.gamma),
    )
    assert metrics.distance_to_modes(out.samples, ring.mixture).mean() > 5


def test_full_window_and_check_every_one_change_nothing(ring, noise):
    """The speed-up knobs at their neutral settings give the default sampler bit for bit."""
    eps = ring.eps_model()
    base = ddim_sample(
        eps,
        ring.schedule,
        noise[:500],
        30,
        guidance=SafeGuidance(ring.density, ring.gamma, ring.threshold),
    )
    for g in (
        SafeGuidance(ring.density, ss.window(ring.gamma, 0.0, 1.0), ring.threshold),
        SafeGuidance(ring.density, ss.constant(ring.gamma), ring.threshold, check_every=1),
        SafeGuidance(ring.density, ss.linear_ramp(ring.gamma, ring.gamma), ring.threshold),
    ):
        assert torch.equal(
            ddim_sample(eps, ring.schedule, noise[:500], 30, guidance=g).samples, base.samples
        )


def test_fused_check_and_gradient_equals_the_two_pass_path(ring, noise):
    """threshold=None shares one decode between the check and the gradient; the result equals
    the two-pass path (a threshold every sample passes) bit for bit."""
    calls = []

    def decoder(z):  # an invertible linear "decoder", counted
        calls.append(z.shape[0])
        return 2.0 * z

    density = ss.densities.DecodedDensity(ring.density, decoder)
    eps = ring.eps_model()
    x_T = noise[:300] * 2
    fused = ddim_sample(
        eps, ring.schedule, x_T, 10, guidance=SafeGuidance(density, 1e-4), record=True
    )
    assert len(calls) == 10  # one decode per step
    calls.clear()
    two_pass = ddim_sample(
        eps,
        ring.schedule,
        x_T,
        10,
        guidance=SafeGuidance(density, 1e-4, threshold=0.0),
        record=True,
    )
    assert len(calls) == 20  # check, then gradient
    assert torch.equal(fused.samples, two_pass.samples)
    assert torch.equal(fused.harm, two_pass.harm) and fused.corrected.all()
