"""Animations and explorers: the GIF of the trajectories, `safescore demo --animate`, the sliders."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # the test process only; the library never switches backends

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageSequence  # noqa: E402

from safescore import NegativeGuidance, SafeGuidance, ddim_sample, toy  # noqa: E402
from safescore.plotting import animate_images, animate_trajectories  # noqa: E402

STEPS = 12


@pytest.fixture(scope="module")
def ring_results():
    problem = toy.ring_problem()
    x_T = problem.noise(64, torch.Generator().manual_seed(0))
    eps = problem.eps_model()
    guidances = {
        "plain": None,
        "negative": NegativeGuidance(problem.density, problem.negative_gamma, problem.threshold),
        "safe": SafeGuidance(problem.density, problem.gamma, problem.threshold),
    }
    results = {
        name: ddim_sample(eps, problem.schedule, x_T, STEPS, guidance=g, record=True)
        for name, g in guidances.items()
    }
    return problem, results


def _frames(path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(im)]


def test_gif_has_one_frame_per_step_plus_x_T(ring_results, tmp_path):
    problem, results = ring_results
    path = tmp_path / "traj.gif"
    anim = animate_trajectories(
        results, path, n=40, mixture=problem.mixture, harmful=problem.harmful
    )
    plt.close(anim._fig)
    assert path.stat().st_size > 0
    frames = _frames(path)
    assert len(frames) == STEPS + 1
    # Samples move: consecutive frames differ.
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(frames[:-1], frames[1:]))


def test_gif_is_what_matplotlibs_pillow_writer_writes(ring_results, tmp_path):
    """Each frame is drawn once (not three times, as FuncAnimation.save does), same GIF."""
    from matplotlib import animation

    problem, results = ring_results
    safe_only = {"safe": results["safe"]}
    ours = animate_trajectories(safe_only, tmp_path / "ours.gif", n=40)
    plt.close(ours._fig)
    theirs = animate_trajectories(safe_only, None, n=40)
    theirs.save(str(tmp_path / "theirs.gif"), writer=animation.PillowWriter(fps=8), dpi=72)
    plt.close(theirs._fig)
    a, b = _frames(tmp_path / "ours.gif"), _frames(tmp_path / "theirs.gif")
    assert len(a) == len(b) == STEPS + 1
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with Image.open(tmp_path / "ours.gif") as im, Image.open(tmp_path / "theirs.gif") as ref:
        assert (im.info["duration"], im.info["loop"]) == (ref.info["duration"], ref.info["loop"])


def test_corrections_are_highlighted_in_red(ring_results, tmp_path):
    """Frames of a step where CDTC corrected show the red highlight; the same panel without
    corrections (all results plain) does not."""
    problem, results = ring_results
    corrected = results["safe"].corrected[:, :40].any(dim=1)
    assert corrected.any(), "the fixture should correct at some steps"
    safe_only = {"safe": results["safe"]}
    plain_only = {"safe": results["plain"]}  # same layout and title, no corrections
    frames = {}
    for name, res in (("safe", safe_only), ("plain", plain_only)):
        path = tmp_path / f"{name}.gif"
        anim = animate_trajectories(res, path, n=40)
        plt.close(anim._fig)
        frames[name] = _frames(path)

    def red(frame):  # pixels close to HARMFUL_COLOR (#d62728)
        r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
        return int(((r > 180) & (g < 90) & (b < 90)).sum())

    for k in range(1, STEPS + 1):
        if corrected[k - 1]:
            assert red(frames["safe"][k]) > red(frames["plain"][k]) + 20, f"step {k}"
            assert np.abs(frames["safe"][k] - frames["plain"][k]).sum() > 0
    # The legend swatch is red in both; no correction at x_T.
    assert red(frames["safe"][0]) == red(frames["plain"][0])


def test_animate_rejects_unrecorded_results(tmp_path):
    problem = toy.ring_problem()
    x_T = problem.noise(8, torch.Generator().manual_seed(0))
    r = ddim_sample(problem.eps_model(), problem.schedule, x_T, 4)
    with pytest.raises(ValueError, match="record=True"):
        animate_trajectories({"plain": r}, tmp_path / "x.gif")


def test_animate_images_frame_count(tmp_path):
    rng = np.random.default_rng(0)
    frames = {"plain": rng.random((5, 16, 16, 3)), "safe": rng.random((5, 16, 16, 3))}
    path = tmp_path / "img.gif"
    anim = animate_images(frames, path, corrected={"safe": np.array([0, 1, 1, 0, 0], bool)})
    plt.close(anim._fig)
    assert len(_frames(path)) == 5


def test_demo_animate_writes_the_gif(tmp_path):
    from safescore.cli import main

    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--samples",
            "50",
            "--steps",
            "8",
            "--animate",
            "--quiet",
            "--no-figures",
        ]  # the GIF only (test_cli.py checks the static figure)
    )
    assert rc in (0, None)
    gif = out / "trajectories.gif"
    assert gif.exists()
    assert len(_frames(gif)) == 8 + 1
    with Image.open(gif) as im:
        assert im.size[0] > 3 * im.size[1] / 2  # three panels side by side


def test_demo_without_animate_writes_no_gif(tmp_path):
    from safescore.cli import main

    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--samples", "20", "--steps", "4", "--quiet", "--no-figures"])
    assert not (out / "trajectories.gif").exists()


def test_ring_explorer_static_and_update():
    from safescore.widgets import RingExplorer, ring_explorer

    fig = ring_explorer(interactive=False, n=100, steps=10)
    assert isinstance(fig, matplotlib.figure.Figure)
    explorer = RingExplorer(n=100, steps=10)
    before = explorer.run().samples.clone()
    explorer.update(strategy="plain")
    plain = explorer.run().samples
    assert not torch.equal(before, plain)  # the safe sampler moved some samples
    explorer.update(strategy="safe", gamma=0.0)  # γ = 0: nothing evaluated, plain bit for bit
    assert torch.equal(explorer.run().samples, plain)
    explorer.update(solver="DPM-Solver++ (2M)", eta=0.5)  # the DDIM noise: ignored by DPM-Solver
    with pytest.raises(TypeError, match="unknown settings"):
        explorer.update(gama=1.0)
    plt.close(explorer.figure)


def test_ring_explorer_widget_builds():
    pytest.importorskip("ipywidgets")
    from safescore.widgets import RingExplorer

    explorer = RingExplorer(n=50, steps=5)
    box = explorer.widget()
    assert len(box.children) == 4
    plt.close(explorer.figure)


def test_explorer_widget_resamples_once_per_new_setting():
    pytest.importorskip("ipywidgets")
    from safescore.widgets import RingExplorer

    explorer = RingExplorer(n=50, steps=5)
    updates = []
    update = explorer.update
    explorer.update = lambda **params: updates.append(params) or update(**params)
    box = explorer.widget()
    gamma = box.children[0].children[0]
    assert updates == []  # the first display shows the figure drawn when the explorer was made
    # What a page's log slider sends back when it draws: base**log_base(value), a rounding off.
    round_trip = 10 ** math.log10(gamma.value)
    assert round_trip != gamma.value
    gamma.value = round_trip
    assert updates == []
    gamma.value = explorer.params["gamma"] / 10
    assert len(updates) == 1 and updates[0]["gamma"] == explorer.params["gamma"]
    assert explorer.params["gamma"] == pytest.approx(explorer.problem.gamma / 10)
    plt.close(explorer.figure)
