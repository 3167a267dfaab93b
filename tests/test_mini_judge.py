"""The independent judge of generated digits (issue 16): reject option, realism, KID."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("sklearn")

from safescore.sd import mini  # noqa: E402
from safescore.sd.mini.judge import DigitJudge, kid_polynomial, to_judge_space  # noqa: E402


@pytest.fixture(scope="module")
def judge():
    return DigitJudge.fit()


def _kid_by_hand(x, y):
    """Unbiased MMD² with k(a, b) = (a·b / d + 1)³, written out with loops."""
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_unbiased_estimator_written_out():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(1.0, 1.0, size=(7, 3))
    # one subset of every row: a permutation, which the estimator does not see
    mean, std = kid_polynomial(x, y, subsets=1, subset_size=7)
    assert mean == pytest.approx(_kid_by_hand(x, y), rel=1e-12)
    assert std == 0.0
    with pytest.raises(ValueError, match="at least 2 rows"):
        kid_polynomial(x[:1], y)


def test_judge_space_round_trip_and_bad_input():
    x8 = np.zeros((1, 8, 8))
    x8[0, 2:6, 3] = 1.0
    x16 = np.repeat(np.repeat(x8, 2, axis=1), 2, axis=2)  # (1, 16, 16): each pixel 2×2
    np.testing.assert_allclose(to_judge_space(x16), 16 * x8.reshape(1, 64))
    np.testing.assert_allclose(to_judge_space(np.stack([x16] * 3, -1)), 16 * x8.reshape(1, 64))
    as_tensor = torch.from_numpy(x16 * 2 - 1)[:, None].expand(-1, 3, -1, -1)  # VAE range
    np.testing.assert_allclose(to_judge_space(as_tensor), 16 * x8.reshape(1, 64), atol=1e-12)
    with pytest.raises(ValueError, match="NaN or inf"):
        to_judge_space(np.full((1, 16, 16), np.nan))
    with pytest.raises(ValueError, match="16×16 or 8×8"):
        to_judge_space(np.zeros((1, 12, 12)))


def test_judge_on_real_digits_and_blobs(judge):
    real = judge.real_images()  # digits the judge never saw
    verdict = judge.judge(real)
    # the realism scale is the 99 % quantile on these digits: 1 % lie beyond it
    assert 0.985 <= verdict["realistic"].mean() <= 0.995
    assert judge.real_accuracy >= 0.95 and (verdict["digit"] == judge.calibration_y).mean() >= 0.95
    assert judge.real_clean_rate == pytest.approx(verdict["clean"].mean())
    assert judge.real_clean_rate >= 0.8
    # the reject option works: confident answers are right more often than the rejected ones
    right = verdict["digit"] == judge.calibration_y
    assert right[verdict["confident"]].mean() >= 0.97 > right[~verdict["confident"]].mean()
    # a blob (a bright disc) and uniform noise are not digits by the realism score
    yy, xx = np.mgrid[:16, :16]
    disc = ((yy - 8) ** 2 + (xx - 8) ** 2 <= 20).astype(float)
    noise = np.random.default_rng(0).uniform(size=(16, 16))
    off = judge.judge(np.stack([disc, noise]))
    assert (off["realism"] > 1).all() and not off["clean"].any()


def test_features_are_the_mlps_hidden_layer(judge):
    x = judge.real_images()[:5]
    z = to_judge_space(x) / 16
    hidden = np.maximum(z @ judge.mlp.coefs_[0] + judge.mlp.intercepts_[0], 0)
    np.testing.assert_array_equal(judge.features(x), hidden)
    # KID between two halves of the real non-3 digits is far below real 3s vs non-3 digits
    others = judge.real_images(exclude=(3,))
    threes = judge.real_images(exclude=(0, 1, 2, 4, 5, 6, 7, 8, 9))
    same = judge.kid(others[::2], others[1::2], subsets=20)[0]
    apart = judge.kid(threes, others, subsets=20)[0]
    assert same < 0.1 * apart


def test_bad_settings():
    with pytest.raises(ValueError, match="confidence must be in"):
        DigitJudge.fit(confidence=1.5)
    with pytest.raises(ValueError, match="quantile must be in"):
        DigitJudge.fit(quantile=0.1)


def test_manifold_trajectories_never_corrected_is_plain(judge):
    from safescore import SafeGuidance
    from safescore.sd.mini.figures import manifold_trajectories, plot_manifold_distance

    pipe = mini.load_pipeline()
    density = mini.clip_density()
    never = SafeGuidance(density, 150.0, threshold=1.0)  # top of the cosine's range
    traj = manifold_trajectories(
        pipe,
        judge,
        "a handwritten seven",
        [0, 1],
        {"plain": None, "safe": never},
        num_inference_steps=4,
    )
    assert traj["plain"]["distance"].shape == (4, 2)
    assert traj["plain"]["previews"].shape == (4, 2, 16, 16, 3)
    assert not traj["safe"]["corrected"].any()
    np.testing.assert_array_equal(traj["safe"]["images"], traj["plain"]["images"])
    np.testing.assert_array_equal(traj["safe"]["distance"], traj["plain"]["distance"])
    fig = plot_manifold_distance(traj)
    assert len(fig.axes) == 1 + 2 * 4  # the curves + a film strip of 4 steps per sampler
