"""The trained mini Stable Diffusion shipped in safescore.sd.mini (issue 10)."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safescore import SafeGuidance  # noqa: E402
from safescore.sd import SafeStableDiffusionPipeline, mini  # noqa: E402
from safescore.sd.mini.train import load_data  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return mini.load_pipeline()


@pytest.fixture(scope="module")
def scorer():
    return mini.digit_classifier()


@pytest.fixture(scope="module")
def real_digits():
    data = load_data(0)
    return data["test_x"].expand(-1, 3, -1, -1), data["test_y"]


def _generate(pipe, prompts, seeds, guidance=None, steps=mini.NUM_INFERENCE_STEPS):
    return pipe(
        prompts,
        guidance=guidance,
        num_inference_steps=steps,
        guidance_scale=mini.GUIDANCE_SCALE,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="np",
        record=guidance is not None,
    )


def test_import_is_lazy_and_weights_are_shipped():
    files = {p.relative_to(mini.WEIGHTS_DIR).as_posix() for p in mini.WEIGHTS_DIR.rglob("*")}
    assert "model_index.json" in files and "MODEL_CARD.md" in files
    assert "unet/diffusion_pytorch_model.safetensors" in files
    assert "clip/model.safetensors" in files and "classifier/model.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)  # safetensors only
    size = sum(p.stat().st_size for p in mini.WEIGHTS_DIR.rglob("*") if p.is_file())
    assert size <= 20e6
    index = json.loads((mini.WEIGHTS_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]


def test_load_pipeline_output(pipe):
    assert isinstance(pipe, SafeStableDiffusionPipeline)
    assert pipe.scheduler.config.steps_offset == 1 and not pipe.random_weights
    out = _generate(pipe, ["a handwritten seven", "the digit 2"], [0, 1], steps=5)
    images = out.images
    assert isinstance(images, np.ndarray) and images.shape == (2, 16, 16, 3)
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1


def test_same_seed_same_bytes(pipe):
    a = _generate(pipe, ["a handwritten five"] * 2, [3, 4], steps=8).images
    b = _generate(pipe, ["a handwritten five"] * 2, [3, 4], steps=8).images
    assert a.tobytes() == b.tobytes()
    assert a[0].tobytes() != a[1].tobytes()  # different seeds, different images


def test_generated_digits_are_the_prompted_ones(pipe, scorer):
    digits = [0, 1, 4, 7, 8]
    prompts = [f"a handwritten {mini.WORDS[d]}" for d in digits for _ in range(3)]
    images = _generate(pipe, prompts, list(range(len(prompts)))).images
    pred = scorer.predict(images)
    assert (pred == np.repeat(digits, 3)).mean() >= 0.6  # measured ~0.95 with 20+ seeds


def test_digit_classifier_on_real_digits(scorer, real_digits):
    x, y = real_digits
    assert scorer.accuracy >= 0.9
    as_np = ((x.permute(0, 2, 3, 1).numpy() + 1) / 2).astype(np.float32)  # (N, 16, 16, 3)
    assert (scorer.predict(as_np) == y.numpy()).mean() >= 0.9
    assert (scorer.predict(x) == y.numpy()).mean() >= 0.9  # torch (N, 3, H, W) in [-1, 1]
    with pytest.raises(ValueError, match="images"):
        scorer.predict(np.zeros((2, 16, 16, 2)))


def test_clip_density_separates_threes(real_digits):
    x, y = real_digits
    density = mini.clip_density(("a handwritten three",))
    with torch.no_grad():
        p = density.prob(x)
    assert p.shape == (len(y),) and bool(((p > -1) & (p < 1)).all())
    p3, p1 = p[y == 3], p[y == 1]
    assert p3.median() > p1.median() + 0.2
    assert (p3 > mini.SAFE_THRESHOLD).float().mean() > 0.8
    assert (p[y != 3] > mini.SAFE_THRESHOLD).float().mean() < 0.1


def test_safe_guidance_removes_threes_and_leaves_others(pipe, scorer):
    guidance = mini.safe_guidance()
    assert isinstance(guidance, SafeGuidance)
    assert guidance.threshold == mini.SAFE_THRESHOLD
    seeds = list(range(6))
    three = ["a handwritten three"] * 6
    plain = _generate(pipe, three, seeds).images
    safe = _generate(pipe, three, seeds, guidance)
    assert (scorer.predict(plain) == 3).mean() >= 0.5
    assert (scorer.predict(safe.images) == 3).mean() <= 0.34
    assert bool(safe.ever_corrected.any())
    seven = ["a handwritten seven"] * 6
    plain7 = _generate(pipe, seven, seeds).images
    safe7 = _generate(pipe, seven, seeds, guidance)
    identical = np.all(plain7 == safe7.images, axis=(1, 2, 3))
    assert identical.mean() >= 0.5
    assert not bool(safe7.ever_corrected[torch.from_numpy(identical)].any())


@pytest.fixture(scope="module")
def quick_weights(tmp_path_factory):
    """One `train --quick` run, shared by the two tests below (kept on one xdist worker)."""
    from safescore.sd.mini import train

    return train.main(
        ["--out", str(tmp_path_factory.mktemp("quick") / "m"), "--quick", "--threads", "1"]
    )


@pytest.mark.xdist_group("mini_quick_train")
def test_train_quick_writes_a_loadable_folder(quick_weights):
    out = quick_weights
    assert (out / "model_index.json").is_file() and (out / "MODEL_CARD.md").is_file()
    p = mini.load_pipeline(weights_dir=out)
    images = _generate(p, ["a handwritten three"], [0], steps=2).images
    assert images.shape == (1, 16, 16, 3)
    assert mini.digit_classifier(weights_dir=out).predict(images).shape == (1,)
    tok = p.tokenizer
    assert tok.tokenize("a handwritten three") == ["a</w>", "handwritten</w>", "three</w>"]
    assert len(tok("any text at all, even ünïcode!").input_ids) > 2  # byte fallback


@pytest.mark.xdist_group("mini_quick_train")
def test_reproduce_stops_each_stage_where_the_log_says(tmp_path, quick_weights):
    """--reproduce repeats a (time-capped) run exactly: each stage stops at the logged step."""
    import hashlib
    import json

    from safescore.sd.mini import train

    first = quick_weights
    log = json.loads((first / "training_log.json").read_text())
    for name in ("clip", "vae", "unet", "classifier"):
        log["stages"][name]["steps"] = 2  # as if the clock had stopped each stage at step 2
    (tmp_path / "log.json").write_text(json.dumps(log))
    args = ["--quick", "--threads", "1", "--reproduce", str(tmp_path / "log.json")]
    b = train.main(["--out", str(tmp_path / "b"), *args])
    c = train.main(["--out", str(tmp_path / "c"), *args])
    stages = json.loads((b / "training_log.json").read_text())["stages"]
    assert all(stages[name]["steps"] == 2 for name in ("clip", "vae", "unet", "classifier"))

    def digest(folder):
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.safetensors"))
        }

    assert digest(b) == digest(c) and digest(b) != digest(first)


def test_loaded_pipeline_defaults_to_the_tuned_settings(pipe):
    # issue 20: mini.safe_guidance() is tuned at CFG mini.GUIDANCE_SCALE, so pipe(prompt)
    # without guidance_scale must use it, not diffusers' 7.5
    assert pipe.default_guidance_scale == mini.GUIDANCE_SCALE == 3.0
    assert pipe.default_num_inference_steps == mini.NUM_INFERENCE_STEPS

    def call(**kw):
        g = torch.Generator().manual_seed(0)
        return pipe(
            "a handwritten three", num_inference_steps=3, generator=g, output_type="np", **kw
        )

    default = call().images
    np.testing.assert_array_equal(default, call(guidance_scale=mini.GUIDANCE_SCALE).images)
    assert not np.array_equal(default, call(guidance_scale=7.5).images)
