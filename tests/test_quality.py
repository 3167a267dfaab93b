"""FID / KID (torchmetrics) with a stand-in feature extractor on sklearn digits; CLIP score."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from safescore.eval.quality import (
    RandomConvFeatures,
    clip_score,
    fid_kid,
    load_image_folder,
    quality_lines,
)

KW = dict(kid_subset_size=100, kid_subsets=20)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images[:600]).float() / 16
    x = torch.nn.functional.interpolate(x[:, None], size=32, mode="nearest").repeat(1, 3, 1, 1)
    return (x * 255).round().byte()


def _noisy(x, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x.float() + 255 * sigma * torch.randn(x.shape, generator=g)).clamp(0, 255).byte()


def test_identical_sets_give_zero(digits):
    res = fid_kid(digits[:300], digits[:300], feature=RandomConvFeatures(), **KW)
    assert abs(res["fid"]) < 1e-6 and abs(res["kid_mean"]) < 1e-3
    assert res["n_real"] == res["n_fake"] == 300 and res["kid_subset_size"] == 100


def test_fid_matches_the_frechet_closed_form(digits):
    f = RandomConvFeatures()
    a, b = digits[:300], _noisy(digits[300:600], 0.2)
    res = fid_kid(a, b, feature=f, **KW)
    fa, fb = (f(x).double().numpy() for x in (a, b))
    mu = fa.mean(0) - fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = mu @ mu + np.trace(s1 + s2 - 2 * covmean)
    assert res["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_fid_and_kid_grow_with_the_perturbation(digits):
    f = RandomConvFeatures()
    real, fake = digits[:300], digits[300:600]
    results = [fid_kid(real, _noisy(fake, s), feature=f, **KW) for s in (0.0, 0.1, 0.2, 0.4)]
    fids = [r["fid"] for r in results]
    kids = [r["kid_mean"] for r in results]
    assert all(x < y for x, y in zip(fids, fids[1:])), fids
    assert all(x < y for x, y in zip(kids, kids[1:])), kids
    assert all(r["kid_std"] >= 0 for r in results)
    # The strongest perturbation is clearly beyond KID's subset noise.
    assert kids[-1] > 3 * results[-1]["kid_std"]


def test_inception_needs_local_weights_offline(digits):
    with pytest.raises(FileNotFoundError, match="--inception-weights"):
        fid_kid(digits[:4], digits[4:8])
    with pytest.raises(ValueError, match="uint8"):
        fid_kid(digits[:4].float(), digits[4:8], feature=RandomConvFeatures())


def test_clip_score_is_max_of_100_mean_cos_and_0():
    assert clip_score([0.3, -0.2, 0.1, None]) == pytest.approx(100 * (0.3 - 0.2 + 0.1) / 3)


def test_report_section(tmp_path, digits):
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(20):
        Image.fromarray(digits[i].permute(1, 2, 0).numpy()).save(ref / f"{i}.png")
    (tmp_path / "images").mkdir()
    rows = []
    for s, src in (("plain", digits[20:40]), ("noisy", _noisy(digits[20:40], 0.4))):
        for i in range(20):
            path = f"images/{s}_{i}.png"
            Image.fromarray(src[i].permute(1, 2, 0).numpy()).save(tmp_path / path)
            pid = f"coco-{i}" if i % 2 else f"template-{i}"
            rows.append(dict(sampler=s, prompt_id=pid, image_path=path, clip_coherence=0.3))
    assert load_image_folder(ref, 32).shape == (20, 3, 32, 32)
    lines = quality_lines(
        tmp_path, rows, ["plain", "noisy"], reference_images=ref,
        feature=RandomConvFeatures(), size=32,
    )  # fmt: skip
    text = "\n".join(lines)
    assert "## CLIP score" in text and "coco (n)" in text and "template (n)" in text
    assert "30.00 (20)" in text and "## FID / KID against ref (20 reference images)" in text
    fid_part = lines[next(i for i, ln in enumerate(lines) if ln.startswith("## FID")) :]
    cells = [ln.split("|") for ln in fid_part if ln.startswith(("| plain", "| noisy"))]
    fid = {c[1].strip(): float(c[3]) for c in cells}
    assert fid["noisy"] > fid["plain"]
    json.dumps(lines)
