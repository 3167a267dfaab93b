"""Bad input found by trying the library as a new user would: each gets a clear error that names
the parameter (or is handled correctly), never a late crash or a silently wrong result."""

from __future__ import annotations

import pytest
import torch

import safescore as ss
from safescore.densities import ClassifierDensity, HarmDensity, HarmPosteriorDensity
from safescore.toy import GaussianMixture, ring_problem


@pytest.fixture(scope="module")
def ring():
    return ring_problem()


def _noise(ring, n=64, dtype=torch.float64):
    return ring.noise(n, torch.Generator().manual_seed(0)).to(dtype)


class ProbOnly(HarmDensity):
    """A density with just the documented protocol: ``prob`` and ``log_prob`` (no shared pass)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.prob_range = inner.prob_range

    def prob(self, x):
        return self.inner.prob(x)

    def log_prob(self, x):
        return self.inner.log_prob(x)

    prob_and_log_prob = None  # as if the base class did not provide it


def test_threshold_none_works_with_a_prob_log_prob_density(ring):
    x_T = _noise(ring)
    ours = ss.ddim_sample(
        ring.eps_model(),
        ring.schedule,
        x_T,
        10,
        guidance=ss.SafeGuidance(ProbOnly(ring.density), 1e-4),
    )
    ref = ss.ddim_sample(
        ring.eps_model(), ring.schedule, x_T, 10, guidance=ss.SafeGuidance(ring.density, 1e-4)
    )
    assert torch.equal(ours.samples, ref.samples)


@pytest.mark.parametrize(
    ("covs", "message"),
    [
        (-0.01, "positive semi-definite"),
        ([[[1.0, 2.0], [2.0, 1.0]]] * 2, "positive semi-definite"),  # indefinite
        (float("nan"), "covs must be finite"),
    ],
)
def test_mixture_covariances_are_checked(covs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(torch.zeros(2, 2), covs)


def test_mixture_means_must_be_finite():
    with pytest.raises(ValueError, match="means must be finite"):
        GaussianMixture([[0.0, float("nan")], [1.0, 1.0]], 0.1)


def test_a_singular_covariance_is_still_accepted():
    """Data on a line (variance 0 across it) is PSD, not negative: sampled, and noised densities
    are finite."""
    mixture = GaussianMixture(torch.zeros(1, 2), [[[1.0, 0.0], [0.0, 0.0]]])
    x = mixture.sample(50, generator=torch.Generator().manual_seed(0))
    assert torch.all(x[:, 1] == 0)
    assert torch.isfinite(mixture.noised(0.5).log_prob(x)).all()


def test_posterior_density_moves_its_mixture():
    mixture = GaussianMixture(torch.randn(3, 2), 0.1)
    density = HarmPosteriorDensity(mixture, [True, False, False])
    same = density.to(torch.float32)  # the mixture's math stays float64
    assert same.mixture.means.dtype == torch.float64 and same.mixture.means.device.type == "cpu"
    moved = density.to("meta")  # a device that needs no GPU
    assert moved.mixture.means.device.type == "meta" and moved.harmful.device.type == "meta"


def test_integer_x_T_is_refused(ring):
    with pytest.raises(TypeError, match="x_T must be a floating-point tensor"):
        ss.ddim_sample(ring.eps_model(), ring.schedule, torch.zeros(4, 2, dtype=torch.int64), 5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_x_T_is_refused(ring, bad):
    x_T = _noise(ring, 4)
    x_T[1, 0] = bad
    with pytest.raises(ValueError, match="x_T contains NaN or inf"):
        ss.ddim_sample(ring.eps_model(), ring.schedule, x_T, 5)


class Constant(HarmDensity):
    def __init__(self, value, prob_range=(0.0, float("inf"))):
        super().__init__()
        self.value, self.prob_range = value, prob_range

    def prob(self, x):
        return torch.full((x.shape[0],), self.value, dtype=x.dtype)

    def log_prob(self, x):
        return -(x**2).sum(-1)


def test_density_prob_inf_is_refused(ring):
    with pytest.raises(FloatingPointError, match="density.prob returned inf"):
        ss.ddim_sample(
            ring.eps_model(),
            ring.schedule,
            _noise(ring, 4),
            5,
            guidance=ss.SafeGuidance(Constant(float("inf")), 0.1, threshold=0.5),
        )


def test_classifier_prob_outside_0_1_is_refused(ring):
    density = ClassifierDensity(lambda x: torch.full((x.shape[0],), 10.0), output="prob")
    with pytest.raises(FloatingPointError, match=r"returned 10.0.*in \[0, 1\]"):
        ss.ddim_sample(
            ring.eps_model(),
            ring.schedule,
            _noise(ring, 4),
            5,
            guidance=ss.SafeGuidance(density, 0.1, threshold=0.5),
        )


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_outside_the_density_range_is_refused(ring, threshold):
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        ss.SafeGuidance(ring.density, 0.1, threshold=threshold)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        ss.NegativeGuidance(ring.density, 0.1, threshold=threshold)


def test_clip_density_declares_the_cosine_range():
    pytest.importorskip("transformers")
    from safescore.sd.clip import CLIPConceptDensity
    from safescore.sd.tiny import tiny_clip

    model, tok = tiny_clip(0)
    density = CLIPConceptDensity(model, tok, ["a cat"])
    assert density.prob_range == (-1.0, 1.0)
    with pytest.raises(ValueError, match=r"threshold must be in \[-1, 1\]"):
        ss.SafeGuidance(density, 1.0, threshold=2.0)


@pytest.mark.parametrize("record", ["no", 1, None])
def test_record_must_be_a_bool(ring, record):
    with pytest.raises(TypeError, match="record must be True or False"):
        ss.ddim_sample(ring.eps_model(), ring.schedule, _noise(ring, 4), 5, record=record)


def test_generator_must_be_a_torch_generator(ring):
    with pytest.raises(TypeError, match="generator must be None or a torch.Generator"):
        ss.ddim_sample(ring.eps_model(), ring.schedule, _noise(ring, 4), 5, generator="x")


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"s": -1}, "s must be"), ({"max_beta": 2}, "max_beta")]
)
def test_cosine_schedule_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ss.NoiseSchedule.cosine(**kwargs)


def test_solver_arguments(ring):
    x_T = _noise(ring, 4)
    with pytest.raises(ValueError, match="solver must be one of"):
        ss.sample(ring.eps_model(), ring.schedule, x_T, 5, solver="euler")
    with pytest.raises(ValueError, match="eta is a DDIM setting"):
        ss.sample(ring.eps_model(), ring.schedule, x_T, 5, solver="dpm++2m", eta=0.5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        ss.sample(ring.eps_model(), ring.schedule, x_T, timesteps=[10, 500])


def test_a_diverging_run_names_the_first_bad_step(ring):
    calls = []

    def eps_model(x, t):
        calls.append(t)
        return torch.full_like(x, float("nan")) if len(calls) == 3 else ring.eps_model()(x, t)

    with pytest.raises(
        FloatingPointError, match="non-finite values in the eps_model output at step 2"
    ):
        ss.ddim_sample(eps_model, ring.schedule, _noise(ring, 4), 6)


def test_save_pretrained_round_trip_with_the_safe_scheduler(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import StableDiffusionPipeline

    from safescore.sd import SafeDDIMScheduler
    from safescore.sd.tiny import tiny_components

    pipe = StableDiffusionPipeline(
        **tiny_components(0),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.scheduler = SafeDDIMScheduler.from_scheduler(pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    again = StableDiffusionPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert isinstance(again.scheduler, SafeDDIMScheduler)
    kw = dict(num_inference_steps=3, output_type="np", height=64, width=64)
    a = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    b = again("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    assert (a == b).all()
