"""η calibration (safescore.eval.calibrate, ``safescore calibrate``) on tiny random components."""

import csv

import numpy as np
import pytest
import torch

from safescore.cli.main import main
from safescore.core.guidance import SafeGuidance
from safescore.eval.calibrate import firing_rates, gate_firing_rate
from safescore.sd.clip import CLIPConceptDensity
from safescore.sd.tiny import tiny_clip, tiny_pipeline

PROMPTS = ["a cat", "a red house"]
SEEDS = [0, 1, 2]
STEPS = 4


def test_firing_rates_closed_form():
    harm = np.array([[0.1, 0.5, np.nan], [0.3, 0.2, 0.9]])  # (steps 2, images 3)
    step_rate, image_rate = firing_rates(harm, [0.0, 0.25, 0.5, 1.0])
    # NaN (not evaluated) never fires: 5 evaluated values of 6 pairs at most.
    np.testing.assert_allclose(step_rate, [5 / 6, 3 / 6, 2 / 6, 0.0])
    np.testing.assert_allclose(image_rate, [1.0, 1.0, 2 / 3, 0.0])
    with pytest.raises(ValueError, match="harm must be"):
        firing_rates(np.zeros(3), [0.0])


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    pipe = tiny_pipeline(
        0, sample_size=16
    )  # 32² images: the gate's logic, at a quarter of the cost
    model, tok = tiny_clip(0)
    density = CLIPConceptDensity(model, tok, ["violence", "nudity"])
    return pipe, density


@pytest.fixture(scope="module")
def calibration(setup):
    pipe, density = setup
    grid = np.linspace(-1, 1, 41)
    return gate_firing_rate(
        pipe, PROMPTS, density, grid, steps=STEPS, seeds=SEEDS, guidance_scale=7.0
    )


def test_rates_are_monotone_and_bounded(calibration):
    r = calibration
    assert r.harm.shape == (STEPS, len(PROMPTS) * len(SEEDS))
    assert np.isfinite(r.harm).all()  # p_h evaluated at every step
    assert (np.diff(r.step_rate) <= 0).all() and (np.diff(r.image_rate) <= 0).all()
    assert (r.image_rate >= r.step_rate).all()  # an image fires if any of its steps does
    assert r.image_rate[0] == 1.0 and r.image_rate[-1] <= 1.0
    lo = r.harm.min()
    below = r.thresholds <= lo
    assert (r.step_rate[below] == 1.0).all()
    assert (r.step_rate[r.thresholds > r.harm.max()] == 0.0).all()


def test_images_fired_are_the_images_safe_sampling_corrects(setup, calibration):
    """A safe trajectory equals the plain one until the gate first fires, so the images whose
    plain trajectory passes η at some step are exactly those CDTC corrects at least once."""
    pipe, density = setup
    per_image_max = calibration.harm.max(axis=0)
    eta = float(np.median(per_image_max))  # some images fire, some don't
    expected = per_image_max >= eta
    assert 0 < expected.sum() < expected.size
    corrected = []
    for prompt in PROMPTS:
        out = pipe(
            prompt, guidance=SafeGuidance(density, 50.0, eta), num_inference_steps=STEPS,
            guidance_scale=7.0, num_images_per_prompt=len(SEEDS),
            generator=[torch.Generator().manual_seed(s) for s in SEEDS],
            output_type="latent", record=True,
        )  # fmt: skip
        corrected.append(out.ever_corrected.numpy())
    assert np.concatenate(corrected).tolist() == expected.tolist()


def test_recording_leaves_the_trajectories_plain(setup):
    pipe, density = setup
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    plain = pipe(PROMPTS[0], num_inference_steps=STEPS, guidance_scale=7.0,
                 num_images_per_prompt=len(SEEDS), generator=gens, output_type="latent").images  # fmt: skip
    from safescore.eval.calibrate import _NeverFires

    rec = _NeverFires(density)
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    out = pipe(
        PROMPTS[0], guidance=SafeGuidance(rec, 1.0, rec.threshold), num_inference_steps=STEPS,
        guidance_scale=7.0, num_images_per_prompt=len(SEEDS), generator=gens,
        output_type="latent", record=True,
    )  # fmt: skip
    assert torch.equal(out.images, plain) and not out.corrected.any()


def test_bad_arguments(setup):
    pipe, density = setup
    with pytest.raises(ValueError, match="thresholds must be"):
        gate_firing_rate(pipe, PROMPTS, density, [], steps=2)
    with pytest.raises(ValueError, match="prompts must be"):
        gate_firing_rate(pipe, [], density, [0.1], steps=2)
    with pytest.raises(ValueError, match="steps must be"):
        gate_firing_rate(pipe, PROMPTS, density, [0.1], steps=0)


def test_cli_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "cal"
    rc = main(["calibrate", "--tiny", "--prompts", "a cat", "--seeds", "2", "--steps", "2",
               "--thresholds=-0.5:0.5:0.25", "--out", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(open(out / "calibration.csv")))
    assert [float(r["threshold"]) for r in rows] == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert all(r["n_images"] == "2" and r["n_steps"] == "4" for r in rows)
    md = (out / "calibration.md").read_text()
    assert "RANDOM WEIGHTS" in md and "calibration.png" in md
    assert (out / "calibration.png").stat().st_size > 1000
    assert "of images" in capsys.readouterr().out


def test_cli_bad_thresholds(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--tiny", "--thresholds", "1:0:0.1", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--thresholds" in capsys.readouterr().err
    rc = main(["calibrate", "--tiny", "--out", str(tmp_path)])  # no prompts
    assert rc == 2 and "--prompts is required" in capsys.readouterr().err
