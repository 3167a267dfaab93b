"""Bad arguments to the mini model's API, the digit classifier and the pipeline: a ValueError
naming the argument and what is allowed, raised before any weights load (issue 17 item 2,
issue 19)."""

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safescore.sd import mini  # noqa: E402


@pytest.fixture(autouse=True)
def no_weights(monkeypatch):
    """Argument checks come first: loading the mini CLIP here would be a failure."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the arguments were checked")

    monkeypatch.setattr(mini, "load_clip", refuse)


CASES = [
    ("concepts-empty-list", lambda: mini.safe_guidance(concepts=[]),
     "concepts must be a string or a non-empty list of non-empty strings (e.g. 'a handwritten three'), got []"),
    ("concepts-none", lambda: mini.clip_density(concepts=None), "concepts must be a string or a non-empty list"),
    ("concepts-blank", lambda: mini.negative_guidance(concepts=["  "]), "concepts must be a string or a non-empty list"),
    ("gamma-negative", lambda: mini.safe_guidance(gamma=-1.0), "gamma must be in [0, inf] or None, got -1.0"),
    ("gamma-nan", lambda: mini.safe_guidance(gamma=float("nan")), "gamma must be a finite number in [0, inf] or None, got nan"),
    ("gamma-string", lambda: mini.negative_guidance(gamma="big"), "gamma must be a finite number in [0, inf] or None, got 'big'"),
    ("threshold-above", lambda: mini.safe_guidance(threshold=1.5), "threshold must be in [-1, 1] or None, got 1.5"),
    ("threshold-below", lambda: mini.negative_guidance(threshold=-2), "threshold must be in [-1, 1] or None, got -2"),
    ("reduction-unknown", lambda: mini.clip_density(reduction="median"),
     "reduction must be one of mean, topk, max, sum_log_topk, matching, got 'median'"),
    ("device-meta-clip", lambda: mini.clip_density(device="meta"), "device 'meta' holds no weights"),
]  # fmt: skip


@pytest.mark.parametrize("call, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


def test_load_pipeline_refuses_the_meta_device():
    with pytest.raises(ValueError, match="device 'meta' holds no weights"):
        mini.load_pipeline(device="meta")


class _Uniform(torch.nn.Module):
    """Stand-in classifier: the mean grey level decides (dark -> 0, bright -> 1)."""

    def forward(self, x):  # (N, 1, 16, 16) in [-1, 1] -> (N, 10) logits
        mean = x.mean(dim=(1, 2, 3))
        logits = torch.full((x.shape[0], 10), -10.0)
        logits[:, 0] = -10 * mean
        logits[:, 1] = 10 * mean
        return logits


def test_digit_scorer_refuses_nan_and_reads_uint8_as_0_to_255():
    scorer = mini.DigitScorer(_Uniform(), accuracy=1.0)
    with pytest.raises(ValueError, match="images hold NaN or infinite values"):
        scorer.predict(np.full((1, 16, 16, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="images hold NaN or infinite values"):
        scorer.predict(torch.full((1, 3, 16, 16), float("inf")))
    with pytest.raises(
        ValueError, match=r"float numpy arrays must be in \[0, 1\].*got values in \[0, 255\]"
    ):
        scorer.predict(np.full((1, 16, 16, 3), 255.0, np.float32))
    with pytest.raises(
        ValueError, match="float in \\[0, 1\\] .* or uint8 in 0..255, got dtype int64"
    ):
        scorer.predict(np.zeros((1, 16, 16, 3), np.int64))
    # uint8 white and black are read as 0..255: the same answers as float 1.0 and 0.0
    white, black = np.full((1, 16, 16, 3), 255, np.uint8), np.zeros((1, 16, 16, 3), np.uint8)
    assert scorer.predict(white).tolist() == scorer.predict(np.ones((1, 16, 16, 3))).tolist() == [1]
    assert scorer.predict(black).tolist() == [0]
    assert np.allclose(scorer.predict_proba(white), scorer.predict_proba(np.ones((1, 16, 16, 3))))


def test_pipeline_refuses_a_non_finite_guidance_scale():
    from safescore.sd.tiny import tiny_pipeline

    pipe = tiny_pipeline(0)
    for bad in (float("nan"), float("inf"), "7"):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
            pipe("x", num_inference_steps=1, guidance_scale=bad, output_type="np")
