"""The manifold claim, seen: distance of the decoded x̂0 to the digit manifold over the steps.

`manifold_trajectories` samples the same noise with several guidances (``record_previews``:
the decoded x̂0 of every step) and scores every decoded x̂0 with the independent judge's
realism score (`DigitJudge.realism`: a PCA-autoencoder distance in units of its 99 % quantile on
real digits, so 1 is the edge of the real digits). `plot_manifold_distance` draws it: one panel
of distance against step with the corrected steps marked, and a film strip of the decoded x̂0 —
the image version of the ring animation.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["manifold_trajectories", "plot_manifold_distance"]


def manifold_trajectories(pipe, judge, prompt, seeds, guidances, **pipe_kwargs) -> dict:
    """Sample ``prompt`` once per seed with each guidance, from the same noise.

    Args:
        pipe: the mini pipeline (`safescore.sd.mini.load_pipeline`).
        judge: a fitted `safescore.sd.mini.judge.DigitJudge`.
        prompt: one prompt string; seeds: list of ints (one generator each).
        guidances: dict name -> guidance (None for plain), e.g. plain / safe / negative.
        pipe_kwargs: num_inference_steps, guidance_scale (default the mini model's).
    Returns:
        dict name -> dict(distance (steps, N) realism of the decoded x̂0 *after* guidance,
        distance_before (steps, N) before guidance, corrected (steps, N) bool, previews
        (steps, N, 16, 16, 3) decoded x̂0 after guidance, images (N, 16, 16, 3) final,
        timesteps (steps,)).
    """
    from . import GUIDANCE_SCALE, NUM_INFERENCE_STEPS

    kwargs = dict(num_inference_steps=NUM_INFERENCE_STEPS, guidance_scale=GUIDANCE_SCALE)
    kwargs.update(pipe_kwargs)
    result = {}
    for name, guidance in guidances.items():
        out = pipe(
            [prompt] * len(seeds),
            guidance=guidance,
            generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
            output_type="np",
            record_previews=True,
            **kwargs,
        )
        before = np.asarray(out.x0_previews)  # (steps, N, H, W, 3)
        after = np.asarray(out.x0_previews_guided)
        steps, n = before.shape[:2]
        flat = dict(
            before=judge.realism(before.reshape(steps * n, *before.shape[2:])),
            after=judge.realism(after.reshape(steps * n, *after.shape[2:])),
        )
        corrected = (
            out.corrected.numpy().astype(bool)
            if out.corrected is not None
            else np.zeros((steps, n), dtype=bool)
        )
        result[name] = dict(
            distance=flat["after"].reshape(steps, n),
            distance_before=flat["before"].reshape(steps, n),
            corrected=corrected,
            previews=after,
            images=np.asarray(out.images),
            timesteps=np.asarray(out.timesteps),
        )
    return result


def plot_manifold_distance(traj: dict, *, seed_index: int = 0, strip_steps=None, labels=None):
    """A figure: top, the distance of the decoded x̂0 to the digit manifold against the step
    (median over seeds, thick; each seed, thin; red dots: steps where CDTC corrected that
    sample); bottom, one film strip per sampler of the decoded x̂0 of seed ``seed_index``
    (red frame: corrected at that step). Returns the matplotlib Figure (no pyplot state)."""
    from matplotlib.figure import Figure

    names = list(traj)
    labels = labels or {}
    steps = next(iter(traj.values()))["distance"].shape[0]
    strip_steps = (
        list(strip_steps)
        if strip_steps is not None
        else sorted({int(round(s)) for s in np.linspace(0, steps - 1, 8)})
    )
    colors = {"plain": "0.35", "safe": "tab:blue", "negative": "tab:orange"}
    fig = Figure(figsize=(10, 3.2 + 1.15 * len(names)), layout="constrained")
    grid = fig.add_gridspec(
        1 + len(names), len(strip_steps), height_ratios=[3.2] + [1] * len(names)
    )
    ax = fig.add_subplot(grid[0, :])
    x = np.arange(steps)
    for name in names:
        d, c = traj[name]["distance"], traj[name]["corrected"]
        color = colors.get(name, None)
        for j in range(d.shape[1]):
            ax.plot(x, d[:, j], color=color, lw=0.5, alpha=0.35)
        ax.plot(x, np.median(d, axis=1), color=color, lw=2.5, label=labels.get(name, name))
        if c.any():
            ys, js = np.nonzero(c)
            ax.scatter(ys, d[ys, js], s=9, color="red", zorder=3)
    ax.scatter([], [], s=9, color="red", label="CDTC corrected this sample at this step")
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.text(
        steps - 1,
        1.02,
        "edge of the real digits (99 % quantile)",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.set_xlabel("DDIM step (0 = pure noise)")
    ax.set_ylabel("distance of decoded x̂0\nto the digit manifold")
    ax.set_xlim(0, steps - 1)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper right")
    for r, name in enumerate(names, start=1):
        prev, corr = traj[name]["previews"], traj[name]["corrected"]
        for k, s in enumerate(strip_steps):
            a = fig.add_subplot(grid[r, k])
            a.imshow(np.clip(prev[s, seed_index], 0, 1), interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            fired = bool(corr[s, seed_index])
            for sp in a.spines.values():
                sp.set_color("red" if fired else "0.7")
                sp.set_linewidth(2.5 if fired else 0.5)
            a.set_xlabel(f"{traj[name]['distance'][s, seed_index]:.2f}", fontsize=7, labelpad=1)
            if r == 1:
                a.set_title(f"step {s}", fontsize=8)
            if k == 0:
                a.set_ylabel(
                    labels.get(name, name), fontsize=8, rotation=0, ha="right", va="center"
                )
    return fig
