"""CLIPConceptDensity and SafetyCheckerDensity on tiny random CLIP models."""

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessor, CLIPProcessor

from safescore.densities import CLIPConceptDensity, SafetyCheckerDensity
from safescore.sd.clip import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    clip_preprocess,
)
from safescore.sd.tiny import tiny_clip, tiny_safety_checker

CONCEPTS = ["violence", "nudity", "nsfw", "harmful"]


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_reductions_match_their_formulas(clip, images):
    model, tok = clip
    base = CLIPConceptDensity(model, tok, CONCEPTS)
    s = base.similarities(images)
    assert s.shape == (3, 4) and (s.abs() <= 1 + 1e-6).all()
    # Cosines from the raw embeddings, independently of the density.
    pixels = clip_preprocess(images, 32)
    img = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output)
    tokens = tok(CONCEPTS, padding="max_length", return_tensors="pt")
    txt = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output)
    torch.testing.assert_close(s, img @ txt.T)
    eps = 1e-6
    top2 = s.topk(2, dim=1).values
    expected = {
        ("mean", None): s.mean(1).clamp(min=eps).log(),
        ("topk", 2): top2.mean(1).clamp(min=eps).log(),
        ("topk", 4): s.mean(1).clamp(min=eps).log(),  # K = M is the plain mean
        ("topk", 1): s.max(1).values.clamp(min=eps).log(),  # K = 1 is the max
        ("max", None): s.max(1).values.clamp(min=eps).log(),
        ("sum_log_topk", 2): top2.clamp(min=eps).log().sum(1),
        ("sum_log_topk", None): s.max(1).values.clamp(min=eps).log(),  # author's default k = 1
    }
    for (reduction, k), value in expected.items():
        d = CLIPConceptDensity(model, tok, CONCEPTS, reduction, k)
        torch.testing.assert_close(d.log_prob(images), value)
        torch.testing.assert_close(d.prob(images), s.max(1).values)  # ANY concept passes


def test_matching_default_is_the_authors(clip, images):
    """Softmax over the RAW cosines (τ = 1) to [concepts..., "A safe picture"]; the first
    concept's probability is both the gate value and (its log) the log-density."""
    model, tok = clip
    d = CLIPConceptDensity(model, tok, CONCEPTS, "matching")
    assert d.text_embeds.shape[0] == len(CONCEPTS) + 1 and d.tau == 1.0
    assert d.matching_concept == "first"
    sims = d.image_embeds(images) @ d.text_embeds.T
    p = sims.softmax(dim=1)
    torch.testing.assert_close(d.prob(images), p[:, 0])
    torch.testing.assert_close(d.log_prob(images), p[:, 0].log())
    prob, log_p = d.prob_and_log_prob(images)
    torch.testing.assert_close(prob, p[:, 0])
    torch.testing.assert_close(log_p, p[:, 0].log())
    # With τ = 1 and cosines in [-1, 1], each probability is within e^±2 of uniform (1 / 5).
    assert ((p[:, 0] > np.exp(-2) / 5) & (p[:, 0] < np.exp(2) / 5)).all()


def test_matching_logit_scale_max_is_the_earlier_behaviour(clip, images):
    model, tok = clip
    d = CLIPConceptDensity(
        model, tok, CONCEPTS, "matching", matching_tau="logit_scale", matching_concept="max"
    )
    sims = d.image_embeds(images) @ d.text_embeds.T
    p = (model.logit_scale.exp() * sims).softmax(dim=1)
    torch.testing.assert_close(d.prob(images), p[:, :4].max(1).values)
    torch.testing.assert_close(d.log_prob(images), (1 - p[:, 4]).log())
    # A numeric τ and the "first" concept combine freely.
    d2 = CLIPConceptDensity(model, tok, CONCEPTS, "matching", matching_tau=10.0)
    torch.testing.assert_close(d2.log_prob(images), (10.0 * sims).log_softmax(dim=1)[:, 0])
    # The concept order matters for "first" only.
    rev = CLIPConceptDensity(model, tok, CONCEPTS[::-1], "matching")
    torch.testing.assert_close(rev.prob(images), sims.softmax(1)[:, 3])


def test_author_preprocessing_is_imagenet_mean_std(clip, images):
    model, tok = clip
    clip_d = CLIPConceptDensity(model, tok, CONCEPTS)
    author = CLIPConceptDensity(model, tok, CONCEPTS, preprocessing="author")
    assert clip_d.image_mean == CLIP_MEAN and clip_d.image_std == CLIP_STD
    assert author.image_mean == IMAGENET_MEAN and author.image_std == IMAGENET_STD
    size = author.image_size
    pixels = clip_preprocess(images, size, IMAGENET_MEAN, IMAGENET_STD, resize="author")
    emb = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output)
    torch.testing.assert_close(author.image_embeds(images), emb)
    # Closed form at the CLIP size (no resize): ((x + 1) / 2 - mean) / std with ImageNet's values.
    small = torch.rand(1, 3, size, size) * 2 - 1
    m = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(
        clip_preprocess(small, size, author._mean, author._std), ((small + 1) / 2 - m) / s
    )
    assert not torch.allclose(author.similarities(images), clip_d.similarities(images))
    # The processor's crop size is kept, only mean/std change.
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )  # fmt: skip
    proc = CLIPProcessor(image_processor=image_processor, tokenizer=tok)
    d = CLIPConceptDensity(model, proc, CONCEPTS, preprocessing="author")
    assert d.image_mean == IMAGENET_MEAN and d.image_size == 32
    assert "preprocessing='author'" in repr(d)


def test_no_nan_when_cosines_are_negative(clip, images):
    model, tok = clip
    for reduction in ("mean", "topk", "max", "sum_log_topk"):
        d = CLIPConceptDensity(model, tok, CONCEPTS, reduction)
        with torch.no_grad():  # make every cosine -1: the author's log(cos) would be NaN
            d.text_embeds.copy_(-d.image_embeds(images[:1]).expand(4, -1))
        x = images[:1].clone().requires_grad_(True)
        log_p = d.log_prob(x)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
        assert torch.isfinite(log_p).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(d.prob(images[:1]), torch.tensor([-1.0]))


def test_gradient_reaches_the_pixels(clip, images):
    model, tok = clip
    d = CLIPConceptDensity(model, tok, CONCEPTS, "matching")
    grad = d.grad_log_prob(images)
    assert grad.shape == images.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_preprocessing_matches_the_clip_processor(images):
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    x = images[:1]
    as_uint8 = ((x[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    theirs = processor(images=[as_uint8], return_tensors="pt").pixel_values
    ours = clip_preprocess(torch.from_numpy(as_uint8).permute(2, 0, 1)[None] / 127.5 - 1, 32)
    # PIL's uint8 bicubic vs torch's float bicubic: equal up to rounding of a few grey levels.
    assert (ours - theirs).abs().mean() < 0.02
    # At the CLIP size there is no resize: exactly the processor's normalisation.
    small = torch.rand(1, 3, 32, 32) * 2 - 1
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(clip_preprocess(small, 32), ((small + 1) / 2 - mean) / std)
    # Non-square: shorter side to the size, centre crop.
    assert clip_preprocess(torch.zeros(2, 3, 40, 80), 32).shape == (2, 3, 32, 32)


def test_processor_constants_are_used(clip, images):
    model, tok = clip
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    d = CLIPConceptDensity(
        model, CLIPProcessor(image_processor=image_processor, tokenizer=tok), CONCEPTS
    )
    assert d.image_mean == (0.5, 0.5, 0.5) and d.image_size == 32
    torch.testing.assert_close(
        d.image_embeds(images),
        torch.nn.functional.normalize(model.get_image_features(
            pixel_values=torch.nn.functional.interpolate(
                images, size=32, mode="bicubic", antialias=True)).pooler_output),
    )  # fmt: skip


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([],), {}, "concepts"),
        ((["a", ""],), {}, "concepts"),
        ((CONCEPTS, "median"), {}, "reduction"),
        ((CONCEPTS, "topk", 5), {}, "k must be an integer in \\[1, 4\\]"),
        ((CONCEPTS, "topk", 0), {}, "k must"),
        ((CONCEPTS, "mean", 2), {}, "k is only used"),
        ((CONCEPTS,), {"preprocessing": "imagenet"}, "preprocessing must be one of"),
        ((CONCEPTS,), {"preprocessing": "author", "image_mean": (0.5,) * 3}, "image_mean"),
        ((CONCEPTS, "matching"), {"matching_tau": 0}, "matching_tau must be a positive"),
        ((CONCEPTS, "matching"), {"matching_tau": "100"}, "matching_tau"),
        ((CONCEPTS, "matching"), {"matching_concept": "last"}, "matching_concept must be one of"),
    ],
)
def test_bad_arguments(clip, args, kwargs, match):
    model, tok = clip
    with pytest.raises(ValueError, match=match):
        CLIPConceptDensity(model, tok, *args, **kwargs)


def test_from_pretrained_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found locally"):
        CLIPConceptDensity.from_pretrained(tmp_path / "no-clip", ["violence"])


def test_from_pretrained_round_trip(clip, tmp_path, images):
    model, tok = clip
    model.save_pretrained(tmp_path / "clip")
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32), tokenizer=tok
    )
    processor.save_pretrained(tmp_path / "clip")
    loaded = CLIPConceptDensity.from_pretrained(tmp_path / "clip", CONCEPTS)
    torch.testing.assert_close(
        loaded.log_prob(images), CLIPConceptDensity(model, tok, CONCEPTS).log_prob(images)
    )


def test_safety_checker_density_reproduces_the_filter_decision(images):
    checker = tiny_safety_checker(seed=0)
    d = SafetyCheckerDensity(checker, score="margin")
    sims = d.similarities(images)
    assert sims.shape == (3, 20)
    # Thresholds just above image 0's cosines: image 0 passes no concept, the others may.
    with torch.no_grad():
        checker.concept_embeds_weights.copy_(sims[0, :17] + 0.002)
        checker.special_care_embeds_weights.fill_(1.0)
    pixels = clip_preprocess(images, 32)
    _, flagged = checker.forward_onnx(pixels, images.clone())
    ours = d.prob(images) > 0
    assert ours.tolist() == flagged.tolist()
    assert not flagged[0] and flagged.any()
    # The cosine score and the log-density (multi-concept mean over the 20 concepts).
    cos = SafetyCheckerDensity(checker)
    torch.testing.assert_close(cos.prob(images), sims.max(1).values)
    torch.testing.assert_close(cos.log_prob(images), sims.mean(1).clamp(min=1e-6).log())
    grad = cos.grad_log_prob(images)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_safety_checker_density_bad_arguments():
    checker = tiny_safety_checker(seed=0)
    with pytest.raises(ValueError, match="score"):
        SafetyCheckerDensity(checker, score="logit")
    with pytest.raises(ValueError, match="matching"):
        SafetyCheckerDensity(checker, reduction="matching")
    with pytest.raises(ValueError, match="k must"):
        SafetyCheckerDensity(checker, reduction="topk", k=21)
    with pytest.raises(TypeError, match="StableDiffusionSafetyChecker"):
        SafetyCheckerDensity(np.zeros(3))


def test_safety_checker_special_care_option(images):
    checker = tiny_safety_checker(seed=0)
    with_sc = SafetyCheckerDensity(checker)
    without = SafetyCheckerDensity(checker, special_care=False)
    all20 = with_sc.similarities(images)
    sims17 = without.similarities(images)
    assert all20.shape == (3, 20) and sims17.shape == (3, 17)
    torch.testing.assert_close(sims17, all20[:, :17])
    torch.testing.assert_close(without.log_prob(images), sims17.mean(1).clamp(min=1e-6).log())
    torch.testing.assert_close(without.prob(images), sims17.max(1).values)
    # The filter's own decision ("margin") uses the special-care concepts either way.
    torch.testing.assert_close(
        SafetyCheckerDensity(checker, score="margin", special_care=False).prob(images),
        SafetyCheckerDensity(checker, score="margin").prob(images),
    )
    # k is bounded by the number of included concepts.
    SafetyCheckerDensity(checker, reduction="topk", k=20)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 17\]"):
        SafetyCheckerDensity(checker, reduction="topk", k=20, special_care=False)
    with pytest.raises(ValueError, match="special_care must be True or False"):
        SafetyCheckerDensity(checker, special_care="no")


def test_safety_checker_author_preprocessing(images):
    checker = tiny_safety_checker(seed=0)
    d = SafetyCheckerDensity(checker, preprocessing="author")
    assert (d.image_mean, d.image_std) == (IMAGENET_MEAN, IMAGENET_STD)
    pixels = clip_preprocess(images, d.image_size, IMAGENET_MEAN, IMAGENET_STD, resize="author")
    emb = torch.nn.functional.normalize(checker.visual_projection(checker.vision_model(pixels)[1]))
    concepts = torch.nn.functional.normalize(
        torch.cat([checker.concept_embeds, checker.special_care_embeds])
    )
    torch.testing.assert_close(d.similarities(images), emb @ concepts.T)
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        SafetyCheckerDensity(checker, preprocessing="ImageNet")


def test_presets_pass_preprocessing_and_special_care(clip):
    from safescore.sd.presets import PRESETS, make_density, make_guidance

    model, tok = clip
    checker = tiny_safety_checker(seed=0)
    assert "our interpretation" in PRESETS["sd-filter"]["label"]
    assert PRESETS["sd-filter"]["special_care"] is True
    d = make_density("sd-filter", safety_checker=checker)
    assert d.special_care and d.preprocessing == "clip"
    d = make_density(
        "sd-filter", safety_checker=checker, special_care=False, preprocessing="author"
    )
    assert not d.special_care and d.image_mean == IMAGENET_MEAN
    g = make_guidance("multi", clip_model=model, tokenizer=tok, preprocessing="author")
    assert g.density.preprocessing == "author" and g.density.image_std == IMAGENET_STD
    with pytest.raises(ValueError, match="special_care is an option of preset 'sd-filter'"):
        make_density("single", clip_model=model, tokenizer=tok, special_care=False)
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        make_density("single", clip_model=model, tokenizer=tok, preprocessing="imagenet")
