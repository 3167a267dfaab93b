"""`--protocol thesis` and `--protocol sld` end to end on tiny Stable Diffusion (issue 13): the
settings reach config.json, the rows and report.md; batched generation equals batch 1."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from safescore.cli import main
from safescore.eval.protocols import protocol_settings
from safescore.eval.report import expected_max_inappropriateness
from safescore.eval.runner import EvalConfig

DATA = Path(__file__).parent / "data" / "eval"
I2P = str(DATA / "i2p_small.csv")


def _rows(run):
    return [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]


def test_protocol_thesis_end_to_end(tmp_path, capsys):
    run = tmp_path / "thesis"
    argv = ["evaluate", "--protocol", "thesis", "--prompts", I2P, "--samplers", "plain,safe-single"]
    argv += ["--limit", "2", "--seeds", "2", "--steps", "2", "--tiny", "--batch-size", "2"]
    argv += ["--height", "32", "--width", "32"]  # the tiny model's 32² images: the code path
    argv += ["--scorers", "nudenet,q16", "--quiet", "--out", str(run)]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["protocol"] == "thesis"
    assert (config["guidance_scale"], config["gamma"], config["threshold"]) == (7.0, 75.0, 0.23)
    assert config["scheduler"] == "ddim"
    assert config["guidance_clip"] == "openai/clip-vit-base-patch16"
    # the author's setting: sd-v1-4.ckpt, ImageNet mean/std and the unantialiased resize
    assert config["model"] == "CompVis/stable-diffusion-v1-4"
    assert config["clip_preprocessing"] == "author" and config["noise"] == "per-image"
    assert config["scorer_clip"] == "openai/clip-vit-large-patch14"
    assert config["categories"] == ["violence", "sexual", "harassment"]
    assert (config["seeds"], config["steps"]) == (2, 2)  # overridden
    rows = _rows(run)
    assert len(rows) == 8  # 2 prompts × 2 seeds × 2 samplers
    assert sorted({r["seed"] for r in rows}) == [0, 1] and all(
        r["guidance_scale"] == 7.0 for r in rows
    )
    assert {r["batch_size"] for r in rows} == {2}
    assert main(["report", str(run), "--bootstrap", "20", "--no-figures"]) == 0
    report = (run / "report.md").read_text()
    print(report)
    assert "Protocol: **thesis**" in report
    assert "Overridden: steps = 2 (protocol: 50); seeds = 2 (protocol: 10)." in report
    assert "| Images scored (n) | 4 | 4 |" in report
    assert "(NudeNet OR Q16)" in report and "exp. max inappropriateness" in report
    assert "reference (thesis)" in report and "15.93 (SD)" in report


def test_protocol_sld_end_to_end(tmp_path, capsys):
    run = tmp_path / "sld"
    argv = [
        "evaluate",
        "--protocol",
        "sld",
        "--prompts",
        I2P,
        "--samplers",
        "plain,safe-single,sld-max",
    ]
    argv += ["--limit", "2", "--seeds", "2", "--steps", "2", "--tiny", "--height", "32"]
    argv += ["--width", "32", "--scorers", "nudenet,q16", "--quiet", "--out", str(run)]
    assert main(argv) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["protocol"] == "sld" and config["scheduler"] == "pndm"
    # eval_I2P.py: sd_seed seeds ONE generator (2 batches of 5); CFG is diffusers' 7.5 (the
    # prompt's sd_guidance_scale is never passed on)
    assert config["data_seeds"] and config["noise"] == "i2p" and config["categories"] is None
    assert config["data_guidance"] is False and config["guidance_scale"] == 7.5
    assert config["model"] == "CompVis/stable-diffusion-v1-4" and config["nudenet_threshold"] == 0.6
    rows = _rows(run)
    assert len(rows) == 12
    by_prompt = {"i2p-0": (11, 7.5), "i2p-1": (22, 7.5)}  # sd_seed, CFG 7.5
    for r in rows:
        seed, scale = by_prompt[r["prompt_id"]]
        assert r["seed"] in (seed, seed + 1) and r["guidance_scale"] == scale
        # plain and SLD run with PNDM; the safe sampler needs an x̂0 site: DDIM
        assert r["scheduler"] == ("ddim" if r["sampler"] == "safe-single" else "pndm")
    assert main(["report", str(run), "--bootstrap", "20", "--no-figures"]) == 0
    report = (run / "report.md").read_text()
    print(report)
    assert "Protocol: **sld**" in report and "seeds = 2 (protocol: 10)" in report
    assert "| sld-max | all | 2 |" in report
    assert (
        "| sexual | sld-max |" in report and "1.62 (Safe SD 1.4 (max)) | 17.27 ± 9.32 |" in report
    )
    assert "reference (thesis)" not in report  # the thesis' table only under its protocol


def test_every_protocol_setting_can_be_overridden():
    for name in ("thesis", "sld"):
        fixed = protocol_settings(name)
        config = EvalConfig.from_protocol(name, prompts="builtin:benign", samplers=["plain"],
                                          tiny=True, scorers="none", steps=7, seeds=3)  # fmt: skip
        assert (config.steps, config.seeds) == (7, 3)
        assert set(config.overrides()) == {"steps", "seeds"} & set(fixed)
        for key, value in fixed.items():
            if key not in ("steps", "seeds"):
                assert getattr(config, key) == value


def test_expected_maximum_inappropriateness():
    assert expected_max_inappropriateness([0.0] * 30) == (0.0, 0.0)
    assert expected_max_inappropriateness([1.0] * 25) == (1.0, 0.0)
    mean, std = expected_max_inappropriateness([0.0] * 99 + [1.0], draws=4000)
    # P(the one flagged prompt is among 25 distinct prompts drawn from 100) = 25/100
    assert mean == pytest.approx(0.25, abs=0.03) and std == pytest.approx(0.433, abs=0.02)


@pytest.mark.parametrize("sampler", ["plain", "safe-single"])
def test_batched_images_equal_batch_one(tmp_path, sampler):
    argv = ["evaluate", "--prompts", I2P, "--samplers", sampler, "--limit", "3", "--steps", "2"]
    argv += ["--tiny", "--scorers", "none", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "b1")]) == 0
    assert main(argv + ["--batch-size", "3", "--out", str(tmp_path / "b3")]) == 0
    one, three = _rows(tmp_path / "b1"), _rows(tmp_path / "b3")
    assert [r["prompt_id"] for r in one] == [r["prompt_id"] for r in three]
    for a, b in zip(one, three):
        assert b["batch_size"] == 3 and a["image_path"] == b["image_path"]
        x = np.asarray(Image.open(tmp_path / "b1" / a["image_path"]), dtype=int)
        y = np.asarray(Image.open(tmp_path / "b3" / b["image_path"]), dtype=int)
        assert np.abs(x - y).max() <= 1  # the same image, up to batched float rounding
        assert a.get("corrected_steps") == b.get("corrected_steps")


def test_author_preprocessing_and_special_care_reach_the_densities():
    """evaluate --clip-preprocessing author --no-special-care: in config.json and in the presets."""
    import torch

    from safescore.cli.evaluate import config_from_args
    from safescore.cli.main import build_parser
    from safescore.eval.samplers import SamplerContext
    from safescore.sd.clip import IMAGENET_MEAN

    args = build_parser().parse_args(
        ["evaluate", "--prompts", "builtin:benign", "--tiny", "--out", "unused"]
        + ["--clip-preprocessing", "author", "--no-special-care"]
    )
    config = config_from_args(args)
    assert config.clip_preprocessing == "author" and config.special_care is False
    context = SamplerContext.from_config(config, device="cpu", dtype=torch.float32)
    single = context.guidance("single").density.density
    assert tuple(single.image_mean) == IMAGENET_MEAN and single.preprocessing == "author"
    sd_filter = context.guidance("sd-filter").density.density
    assert sd_filter.special_care is False
    with pytest.raises(ValueError, match="clip_preprocessing must be 'clip' or 'author'"):
        EvalConfig(prompts="builtin:benign", tiny=True, clip_preprocessing="imagenet")
