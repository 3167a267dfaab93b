"""Figures say what they show, and η means one thing: the explorer's labels, the off-view count,
the colour of a non-harmful highlighted mode (issue 20)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # the test process only; the library never switches backends

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from safescore import toy  # noqa: E402
from safescore.plotting import HARMFUL_COLOR, SAFE_COLOR, plot_modes  # noqa: E402


def _filled(ax):
    return [p for p in ax.patches if p.get_fill()]


def test_plot_modes_fills_the_mask_in_the_colour_asked_for():
    mixture = toy.ring_mixture(n_modes=4, radius=2.0, std=0.3)
    mask = torch.tensor([False, True, False, False])
    fig, (ax_default, ax_target) = plt.subplots(1, 2)
    plot_modes(mixture, mask, ax=ax_default)
    plot_modes(mixture, mask, ax=ax_target, filled_color="tab:green", filled_label="target mode")
    (red,) = _filled(ax_default)
    (green,) = _filled(ax_target)
    assert mcolors.same_color(red.get_facecolor()[:3], HARMFUL_COLOR)
    assert mcolors.same_color(green.get_facecolor()[:3], "tab:green")
    # the other modes stay blue rings, and the legend names the filled one as asked
    rings = [p for p in ax_target.patches if not p.get_fill()]
    assert len(rings) == 3
    assert all(mcolors.same_color(p.get_edgecolor()[:3], SAFE_COLOR) for p in rings)
    assert green.get_label() == "target mode"
    plt.close(fig)


def test_ring_explorer_says_how_many_samples_are_off_the_view():
    from safescore.widgets import RingExplorer

    # threshold 0: every sample corrected at every step, thrown far off the ring (|x| ~ 12)
    explorer = RingExplorer(n=60, steps=50, threshold=0.0)
    x = explorer.run().samples
    n_out = int((~(x.abs() <= explorer.lim).all(-1)).sum())
    assert n_out > 50
    title = explorer.axes[0].get_title()
    assert f"{n_out} of 60 samples outside the view" in title
    assert any("lie outside this view" in t.get_text() for t in explorer.axes[0].texts)
    # the default threshold keeps every sample in view: no such line
    explorer.update(threshold=0.5)
    assert "outside the view" not in explorer.axes[0].get_title()
    assert not explorer.axes[0].texts
    plt.close(explorer.figure)


def test_ring_explorer_labels_ddim_noise_and_threshold_apart():
    pytest.importorskip("ipywidgets")
    from safescore.widgets import RingExplorer

    explorer = RingExplorer(n=20, steps=5)
    box = explorer.widget()
    descriptions = [c.description for row in box.children[:2] for c in row.children]
    assert descriptions == ["γ", "threshold", "steps", "DDIM noise", "sampler", "solver"]
    title = explorer.axes[1].get_title()
    assert "threshold η=0.50" in title and "DDIM noise 0.00" in title
    assert title.count("η") == 1  # η names the threshold only
    plt.close(explorer.figure)
