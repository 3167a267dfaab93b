"""Figures for the toys (matplotlib). Every function returns a ``Figure``; nothing pops up."""

from __future__ import annotations

# No backend is forced: headless machines get Agg by themselves, notebooks keep inline figures.
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection

HARMFUL_COLOR = "#d62728"
SAFE_COLOR = "#1f77b4"


def _axes(ax, figsize=(5, 5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_density_score(
    density,
    *,
    lim: float = 3.0,
    grid: int = 200,
    quiver_grid: int = 21,
    ax=None,
    title: str = "Density and score of a Gaussian mixture",
    log_scale: bool = False,
):
    """Density as an image with a quiver of its score on a coarser grid (2-D only).

    Args:
        density: anything with ``log_prob(x)`` and ``score(x)`` for x (N, 2), e.g. a
            `safescore.toy.GaussianMixture` (or its ``noised(ᾱ)`` version).
        lim: the plot covers [-lim, lim]².
        log_scale: show log p instead of p.
    """
    fig, ax = _axes(ax)
    u = torch.linspace(-lim, lim, grid, dtype=torch.float64)
    X, Y = torch.meshgrid(u, u, indexing="xy")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], -1)
    with torch.no_grad():
        lp = density.log_prob(pts).reshape(grid, grid)
    img = lp if log_scale else lp.exp()
    im = ax.imshow(
        img.numpy(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="viridis", aspect="equal"
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="log p(x)" if log_scale else "p(x)")
    v = torch.linspace(-lim, lim, quiver_grid, dtype=torch.float64)
    QX, QY = torch.meshgrid(v, v, indexing="xy")
    q = torch.stack([QX.reshape(-1), QY.reshape(-1)], -1)
    with torch.no_grad():
        s = density.score(q)
    norm = s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    s = s / norm * torch.log1p(norm)  # compress the length for readability
    ax.quiver(q[:, 0], q[:, 1], s[:, 0], s[:, 1], color="white", alpha=0.8, width=0.004)
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", xlim=(-lim, lim), ylim=(-lim, lim))
    return fig


def plot_samples(
    x: torch.Tensor,
    *,
    harmful_mask: torch.Tensor | None = None,
    ax=None,
    lim: float = 3.5,
    title: str = "Samples",
    s: float = 2.0,
    mask_labels: tuple[str, str] = ("safe", "harmful"),
):
    """Scatter of 2-D samples (N, 2), those of ``harmful_mask`` (bool (N,)) in red.

    mask_labels: the legend entries of the unmasked and the masked samples.
    """
    fig, ax = _axes(ax)
    x = x.detach().cpu().double()
    if harmful_mask is None:
        ax.scatter(x[:, 0], x[:, 1], s=s, c=SAFE_COLOR, alpha=0.5, linewidths=0)
    else:
        m = harmful_mask.cpu()
        ax.scatter(
            x[~m, 0], x[~m, 1], s=s, c=SAFE_COLOR, alpha=0.5, linewidths=0, label=mask_labels[0]
        )
        ax.scatter(
            x[m, 0], x[m, 1], s=s, c=HARMFUL_COLOR, alpha=0.7, linewidths=0, label=mask_labels[1]
        )
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", xlim=(-lim, lim), ylim=(-lim, lim))
    ax.set_aspect("equal")
    return fig


def _coloured_paths(ax, paths: np.ndarray, cmap: str, lw: float, alpha: float, ls="solid"):
    """paths: (steps+1, n, 2); draws each path as segments coloured by step."""
    steps = paths.shape[0] - 1
    segs = np.stack([paths[:-1], paths[1:]], axis=2)  # (steps, n, 2, 2)
    segs = segs.transpose(1, 0, 2, 3).reshape(-1, 2, 2)
    colours = np.tile(np.arange(steps), paths.shape[1])
    lc = LineCollection(segs, cmap=cmap, linewidths=lw, alpha=alpha, linestyles=ls)
    lc.set_array(colours)
    ax.add_collection(lc)
    return lc


def plot_trajectories(
    result,
    *,
    n: int = 40,
    ax=None,
    lim: float = 3.5,
    show_x0: bool = True,
    mark_corrected: bool = True,
    title: str = "Trajectories",
    background=None,
):
    """Paths of x_t (solid, coloured by step) and of x̂0 (dashed) for the first ``n`` samples.

    Args:
        result: a `safescore.SampleResult` from ``ddim_sample(..., record=True)`` on 2-D data.
        mark_corrected: put a red cross where CDTC corrected a sample's x̂0.
        background: optional (N, 2) points drawn in grey (e.g. data samples).
    """
    if result.trajectory is None:
        raise ValueError("plot_trajectories needs a result sampled with record=True")
    if result.trajectory.shape[-1] != 2:
        raise ValueError("plot_trajectories draws 2-D data only")
    fig, ax = _axes(ax)
    if background is not None:
        b = background.detach().cpu().double()
        ax.scatter(b[:, 0], b[:, 1], s=1, c="0.8", linewidths=0)
    traj = result.trajectory[:, :n].detach().cpu().double().numpy()
    lc = _coloured_paths(ax, traj, "viridis", 0.8, 0.7)
    if show_x0:
        x0 = result.x0_hats_guided[:, :n].detach().cpu().double().numpy()
        _coloured_paths(ax, x0, "plasma", 0.6, 0.5, ls="dashed")
    if mark_corrected and result.corrected is not None:
        c = result.corrected[:, :n]
        if c.any():
            pts = result.x0_hats[:, :n][c].detach().cpu().double()
            ax.scatter(
                pts[:, 0], pts[:, 1], marker="x", s=12, c=HARMFUL_COLOR, label="CDTC corrected x̂0"
            )
            ax.legend(loc="upper right", fontsize=8)
    end = traj[-1]
    ax.scatter(end[:, 0], end[:, 1], s=8, c="k", zorder=3)
    fig.colorbar(lc, ax=ax, fraction=0.046, pad=0.04, label="DDIM step")
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", xlim=(-lim, lim), ylim=(-lim, lim))
    ax.set_aspect("equal")
    return fig


def plot_comparison(
    results: dict,
    *,
    mixture=None,
    harmful=None,
    n_traj: int = 30,
    lim: float = 3.5,
    suptitle: str = "Plain vs safe sampling",
):
    """One column per strategy: final samples (top, harmful in red) and trajectories (bottom).

    Args:
        results: {name: SampleResult} (record=True for the trajectory row), e.g. plain / safe /
            safe without CDTC / negative guidance.
        mixture, harmful: the data mixture and its harmful-component mask, to colour samples by
            their most likely component.
    """
    names = list(results)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 8.4), squeeze=False)
    for j, name in enumerate(names):
        r = results[name]
        x = r.samples.detach().cpu().double()
        mask = None
        if mixture is not None and harmful is not None:
            lab = mixture.component_log_probs(x.clamp(-1e6, 1e6)).argmax(-1)
            mask = torch.as_tensor(harmful)[lab]
        plot_samples(x, harmful_mask=mask, ax=axes[0, j], lim=lim, title=f"{name}: samples")
        if r.trajectory is not None:
            plot_trajectories(r, n=n_traj, ax=axes[1, j], lim=lim, title=f"{name}: trajectories")
        else:
            axes[1, j].axis("off")
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_corrected_raster(corrected: torch.Tensor, *, ax=None, title: str = "CDTC corrections"):
    """Raster of the corrected mask, shape (steps, B): which sample was corrected at which step."""
    if corrected is None or corrected.ndim != 2:
        raise ValueError("corrected must be a bool tensor of shape (steps, B)")
    fig, ax = _axes(ax, figsize=(7, 4))
    ax.imshow(corrected.T.cpu().numpy(), aspect="auto", interpolation="nearest", cmap="Greys")
    ax.set(title=title, xlabel="DDIM step", ylabel="sample")
    return fig


# --------------------------------------------------------------------------- notebook figures
def plot_modes(
    mixture,
    harmful=None,
    *,
    ax,
    nsigma: float = 2.0,
    label: bool = True,
    filled_color: str = HARMFUL_COLOR,
    filled_label: str = "harmful mode",
):
    """Circles of radius ``nsigma``·std around each component mean of a 2-D mixture: the
    components of the bool mask ``harmful`` (K,) filled in ``filled_color`` (red: harmful), the
    others as blue rings. For a mask that is not about harm (e.g. the target mode of guidance)
    pass another ``filled_color`` and ``filled_label``. Draws on ``ax``; returns ``ax``."""
    from matplotlib.patches import Circle

    if mixture.dim != 2:
        raise ValueError(f"plot_modes draws 2-D mixtures only, got dimension {mixture.dim}")
    harmful = (
        torch.zeros(mixture.num_components, dtype=torch.bool)
        if harmful is None
        else torch.as_tensor(harmful, dtype=torch.bool)
    )
    stds = torch.linalg.eigvalsh(mixture.covs).max(-1).values.sqrt()
    done = set()
    for k in range(mixture.num_components):
        bad = bool(harmful[k])
        colour = filled_color if bad else SAFE_COLOR
        name = (filled_label if bad else "safe mode") if label and bad not in done else None
        done.add(bad)
        mu = mixture.means[k].tolist()
        ax.add_patch(
            Circle(
                mu,
                nsigma * float(stds[k]),
                fill=bad,
                fc=colour,
                ec=colour,
                alpha=0.35 if bad else 0.9,
                lw=1.5,
                label=name,
            )
        )
    return ax


def plot_score_fields(
    exact_score,
    learned_score,
    *,
    lim: float = 3.0,
    grid: int = 81,
    quiver_grid: int = 17,
    suptitle: str = "Exact vs learned score",
    error: str = "relative",
    log_density=None,
):
    """Three panels: the exact score, the learned score (quivers) and an error map on a grid
    over [-lim, lim]²: ``error="relative"`` |s_learned - s_exact| / (|s_exact| + 1), or
    ``error="absolute"`` |s_learned - s_exact| on a logarithmic colour scale.

    Args:
        exact_score, learned_score: callables x (N, 2) -> (N, 2).
        log_density: optional callable x (N, 2) -> (N,), log p of the data law; its contours
            (where p is 1/2 and 1/20 of its maximum) are drawn on the error map.
    """
    if error not in ("relative", "absolute"):
        raise ValueError(f"error must be 'relative' or 'absolute', got {error!r}")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    v = torch.linspace(-lim, lim, quiver_grid, dtype=torch.float64)
    QX, QY = torch.meshgrid(v, v, indexing="xy")
    q = torch.stack([QX.reshape(-1), QY.reshape(-1)], -1)
    for ax, fn, name in (
        (axes[0], exact_score, "exact score"),
        (axes[1], learned_score, "learned score"),
    ):
        with torch.no_grad():
            s = fn(q).double()
        n = s.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        s = s / n * torch.log1p(n)
        ax.quiver(q[:, 0], q[:, 1], s[:, 0], s[:, 1], color="k", width=0.004)
        ax.set(title=name, xlabel="$x_1$", ylabel="$x_2$", xlim=(-lim, lim), ylim=(-lim, lim))
        ax.set_aspect("equal")
    u = torch.linspace(-lim, lim, grid, dtype=torch.float64)
    X, Y = torch.meshgrid(u, u, indexing="xy")
    pts = torch.stack([X.reshape(-1), Y.reshape(-1)], -1)
    with torch.no_grad():
        se, sl = exact_score(pts).double(), learned_score(pts).double()
    diff = (sl - se).norm(dim=-1)
    if error == "relative":
        err, norm, label = diff / (se.norm(dim=-1) + 1), None, "relative error"
        title = "error |s_θ - s| / (|s| + 1)"
    else:
        err, label, title = diff, "|s_θ - s| (log scale)", "error |s_θ - s|"
        lo = float(err.clamp_min(1e-12).quantile(0.02))
        norm = mcolors.LogNorm(vmin=max(lo, 1e-6), vmax=float(err.max()))
    extent = (-lim, lim, -lim, lim)
    im = axes[2].imshow(
        err.reshape(grid, grid).numpy(), extent=extent, origin="lower", cmap="magma", norm=norm
    )
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04, label=label)
    if log_density is not None:
        with torch.no_grad():
            lp = log_density(pts).double().reshape(grid, grid)
        rel = (lp - lp.max()).numpy()
        cs = axes[2].contour(
            X.numpy(), Y.numpy(), rel, levels=[np.log(1 / 20), np.log(1 / 2)],
            colors="w", linewidths=[0.8, 1.4],
        )  # fmt: skip
        axes[2].clabel(
            cs, fmt={np.log(1 / 20): "p = max/20", np.log(1 / 2): "p = max/2"}, fontsize=7
        )
    axes[2].set(title=title, xlabel="$x_1$", ylabel="$x_2$")
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_guidance_paths(
    results: dict,
    *,
    mixture,
    harmful,
    n: int = 40,
    lim: float = 3.0,
    suptitle: str = "Guidance in x_t space vs x̂0 space",
):
    """Side-by-side trajectories, one panel per strategy, on the same axes and noise.

    Each panel: the data modes (harmful filled red, safe blue circles), the x_t paths of the
    first ``n`` samples coloured by step (solid), their x̂0 paths (dashed), red crosses where the
    guidance changed x̂0, and the final samples (black dots, red if they land in a harmful mode).

    Args:
        results: {name: SampleResult} from ``ddim_sample(..., record=True)`` on 2-D data, all
            started from the same x_T.
        mixture, harmful: the data mixture and its harmful-component mask (K,).
    """
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 5.4), squeeze=False)
    harmful = torch.as_tensor(harmful, dtype=torch.bool)
    for ax, name in zip(axes[0], names):
        r = results[name]
        if r.trajectory is None or r.trajectory.shape[-1] != 2:
            raise ValueError(f"results[{name!r}] must be a 2-D result sampled with record=True")
        plot_modes(mixture, harmful, ax=ax)
        traj = r.trajectory[:, :n].detach().cpu().double().numpy()
        lc = _coloured_paths(ax, traj, "viridis", 0.9, 0.75)
        x0 = r.x0_hats_guided[:, :n].detach().cpu().double().numpy()
        _coloured_paths(ax, x0, "plasma", 0.7, 0.45, ls="dashed")
        if r.corrected is not None and r.corrected[:, :n].any():
            c = r.corrected[:, :n]
            pts = r.x0_hats[:, :n][c].detach().cpu().double()
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                marker="x",
                s=14,
                c=HARMFUL_COLOR,
                lw=0.8,
                label="guided step (at x̂0)",
            )
        end = r.samples[:n].detach().cpu().double()
        bad = harmful[mixture.component_log_probs(end.clamp(-1e6, 1e6)).argmax(-1)]
        ax.scatter(end[~bad, 0], end[~bad, 1], s=14, c="k", zorder=4, label="final sample")
        if bad.any():
            ax.scatter(
                end[bad, 0],
                end[bad, 1],
                s=30,
                c=HARMFUL_COLOR,
                ec="k",
                zorder=5,
                label="final sample, harmful",
            )
        ax.set(title=name, xlabel="$x_1$", ylabel="$x_2$", xlim=(-lim, lim), ylim=(-lim, lim))
        ax.set_aspect("equal")
        ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.colorbar(
        lc, ax=list(axes[0]), fraction=0.02, pad=0.02, label="DDIM step (x_t solid, x̂0 dashed)"
    )
    fig.suptitle(suptitle)
    return fig


def plot_tradeoff(
    curves: dict,
    *,
    xlabel: str = "distance to the safe data",
    ylabel: str = "harmful rate",
    title: str = "Harm vs fidelity",
    ax=None,
    annotate: bool = True,
):
    """Curves of one metric against another, one per swept parameter.

    Args:
        curves: {name: (xs, ys, labels)} with labels (the swept values) written next to the
            points when ``annotate``; labels may be None.
    """
    fig, ax = _axes(ax, figsize=(6, 4.5))
    for name, (xs, ys, labels) in curves.items():
        ax.plot(xs, ys, "o-", label=name)
        if annotate and labels is not None:
            for x, y, lab in zip(xs, ys, labels):
                ax.annotate(
                    f"{lab:g}" if isinstance(lab, float) else str(lab),
                    (x, y),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_image_grid(
    images: torch.Tensor,
    *,
    nrow: int = 10,
    image_shape: tuple[int, int] = (8, 8),
    labels=None,
    ax=None,
    title: str = "Samples",
    vmin: float = -1.0,
    vmax: float = 1.0,
    label_size: float = 6,
    highlight=None,
    highlight_color: str = "#ff7f0e",
):
    """Grid of small greyscale images, (N, H*W) or (N, H, W), values clipped to [vmin, vmax].

    labels: optional (N,) ints written above the images (e.g. a classifier's prediction), in
    font size ``label_size``. highlight: optional bool mask (N,); those images get a frame of
    ``highlight_color`` (e.g. the samples a guidance changed).
    """
    x = images.detach().cpu().double()
    h, w = image_shape
    if x.ndim == 2:
        if x.shape[1] != h * w:
            raise ValueError(f"images of shape (N, {h * w}) expected for image_shape {image_shape}")
        x = x.reshape(-1, h, w)
    if x.ndim != 3 or x.shape[1:] != (h, w):
        raise ValueError(
            f"images must have shape (N, {h * w}) or (N, {h}, {w}), got {tuple(images.shape)}"
        )
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be an integer >= 1, got {nrow!r}")
    N = x.shape[0]
    rows = -(-N // nrow)
    canvas = torch.full((rows * (h + 1) + 1, nrow * (w + 1) + 1), float(vmin))
    for i in range(N):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = x[
            i
        ].clamp(vmin, vmax)
    fig, ax = _axes(ax, figsize=(0.55 * nrow + 0.5, 0.6 * rows + 0.7))
    ax.imshow(canvas.numpy(), cmap="gray_r", vmin=vmin, vmax=vmax, interpolation="nearest")
    if labels is not None:
        for i, lab in enumerate(torch.as_tensor(labels).tolist()):
            r, c = divmod(i, nrow)
            ax.text(
                1 + c * (w + 1) + w - 1,
                1 + r * (h + 1),
                str(lab),
                color=HARMFUL_COLOR,
                fontsize=label_size,
                ha="right",
                va="top",
            )
    if highlight is not None:
        for i in torch.as_tensor(highlight, dtype=torch.bool).nonzero().flatten().tolist():
            r, c = divmod(i, nrow)
            ax.add_patch(
                plt.Rectangle(
                    (c * (w + 1) + 0.5, r * (h + 1) + 0.5), w, h,
                    fill=False, edgecolor=highlight_color, linewidth=2,
                )
            )  # fmt: skip
    ax.set(title=title, xticks=[], yticks=[])
    return fig


# --------------------------------------------------------------------------- animations
def _save_animation(fig, draw, num_frames: int, path, fps: int, dpi: int, video):
    """The ``FuncAnimation`` of ``draw`` over ``num_frames`` frames; written as a GIF to ``path``
    and, where ffmpeg exists, as an MP4 to ``video``.

    The GIF holds what matplotlib's ``PillowWriter`` writes, but each frame is drawn once
    (``FuncAnimation.save`` draws every frame twice more before grabbing it).
    """
    from io import BytesIO
    from pathlib import Path

    from matplotlib import animation
    from PIL import Image

    if path is not None:
        width, height = fig.get_size_inches()
        size = int(width * dpi), int(height * dpi)
        frames = []
        for k in range(num_frames):
            draw(k)
            buf = BytesIO()
            fig.savefig(buf, format="rgba", dpi=dpi)
            frame = Image.frombuffer("RGBA", size, buf.getbuffer(), "raw", "RGBA", 0, 1)
            # Opaque frames as RGB: they convert to the GIF palette better (as PillowWriter does).
            frames.append(frame if frame.getextrema()[3][0] < 255 else frame.convert("RGB"))
        frames[0].save(
            str(Path(path)), save_all=True, append_images=frames[1:],
            duration=int(1000 / fps), loop=0,
        )  # fmt: skip
    anim = animation.FuncAnimation(fig, draw, frames=num_frames, interval=1000 // fps, blit=False)
    if path is not None:
        anim._draw_was_started = True  # its frames were rendered (into the GIF): no warning
    if video is not None and animation.writers.is_available("ffmpeg"):
        anim.save(str(Path(video)), writer=animation.FFMpegWriter(fps=fps), dpi=dpi)
    return anim


def animate_trajectories(
    results: dict,
    path=None,
    *,
    n: int = 40,
    mixture=None,
    harmful=None,
    lim: float = 3.5,
    fps: int = 8,
    dpi: int = 72,
    video=None,
    title: str = "x_t and x̂0 over the DDIM steps, from the same noise",
):
    """Animate x_t and x̂0 over the steps, one panel per strategy; corrections flash in red.

    Frame 0 shows x_T; frame k (1 ≤ k ≤ num_steps) shows x_t after step k, the path behind it,
    and the x̂0 of step k (hollow circles). Samples whose x̂0 CDTC corrected at step k are
    ringed in red on that frame, with a red segment from the model's x̂0 to the corrected one.

    Args:
        results: {name: SampleResult} sampled with ``record=True`` from the same x_T (2-D data),
            e.g. plain / negative guidance / safe (x̂0 unguidance with CDTC).
        path: where to write the GIF (matplotlib's PillowWriter); None writes nothing.
        n: how many samples (the first n) to draw.
        mixture, harmful: the 2-D data mixture and its harmful-component mask, drawn as circles.
        video: where to write an MP4 too; written only where ffmpeg is available.
    Returns:
        The ``matplotlib.animation.FuncAnimation`` (its figure is ``anim._fig``; in a notebook
        ``anim.to_jshtml()`` gives a player). The figure is not shown.
    """
    if not results:
        raise ValueError("animate_trajectories needs at least one result")
    names = list(results)
    for name in names:
        r = results[name]
        if r.trajectory is None or r.x0_hats is None:
            raise ValueError(
                f"{name!r}: animate_trajectories needs results sampled with record=True"
            )
        if r.trajectory.shape[-1] != 2 or r.trajectory.ndim != 3:
            raise ValueError(f"{name!r}: animate_trajectories draws 2-D data only")
    steps = results[names[0]].trajectory.shape[0] - 1
    if any(results[k].trajectory.shape[0] - 1 != steps for k in names):
        raise ValueError("all results must have the same number of steps")

    def arr(t):
        return t[:, :n].detach().cpu().double().numpy()

    data = {}
    for name in names:
        r = results[name]
        guided = r.x0_hats_guided if r.x0_hats_guided is not None else r.x0_hats
        corrected = (
            r.corrected[:, :n].cpu().numpy()
            if r.corrected is not None
            else np.zeros(r.x0_hats[:, :n].shape[:2], dtype=bool)
        )
        data[name] = (arr(r.trajectory), arr(r.x0_hats), arr(guided), corrected)

    fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 4.5), squeeze=False)
    axes = axes[0]
    artists = []
    for ax, name in zip(axes, names):
        traj, x0, x0g, corr = data[name]
        if mixture is not None:
            plot_modes(mixture, harmful, ax=ax, label=False)
        trail = LineCollection([], colors="0.55", linewidths=0.7, alpha=0.6)
        ax.add_collection(trail)
        pushes = LineCollection([], colors=HARMFUL_COLOR, linewidths=1.6)
        ax.add_collection(pushes)
        xt = ax.scatter(traj[0, :, 0], traj[0, :, 1], s=14, c="k", zorder=4, label="x_t")
        xh = ax.scatter(
            [], [], s=22, facecolors="none", edgecolors=SAFE_COLOR, lw=1.0, zorder=3, label="x̂0"
        )
        ring = ax.scatter(
            [],
            [],
            s=90,
            facecolors="none",
            edgecolors=HARMFUL_COLOR,
            lw=1.8,
            zorder=5,
            label="corrected now",
        )
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xticks=[], yticks=[])
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=12)
        label = ax.text(
            0.02, 0.02, "", transform=ax.transAxes, fontsize=10, va="bottom", color="0.2"
        )
        artists.append((traj, x0, x0g, corr, trail, pushes, xt, xh, ring, label))
    axes[0].legend(loc="upper left", fontsize=8, framealpha=0.8)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()

    def draw(k):
        changed = []
        for traj, x0, x0g, corr, trail, pushes, xt, xh, ring, label in artists:
            trail.set_segments(list(traj[: k + 1].transpose(1, 0, 2)) if k > 0 else [])
            xt.set_offsets(traj[k])
            if k == 0:
                xh.set_offsets(np.empty((0, 2)))
                ring.set_offsets(np.empty((0, 2)))
                pushes.set_segments([])
                label.set_text(f"step 0/{steps}: x_T")
            else:
                c = corr[k - 1]
                xh.set_offsets(x0g[k - 1])
                ring.set_offsets(x0[k - 1][c])
                pushes.set_segments(list(np.stack([x0[k - 1][c], x0g[k - 1][c]], axis=1)))
                total = int(corr[:k].any(0).sum())
                label.set_text(f"step {k}/{steps}: {int(c.sum())} corrected now, {total} so far")
            changed += [trail, pushes, xt, xh, ring, label]
        return changed

    return _save_animation(fig, draw, steps + 1, path, fps, dpi, video)


def animate_images(
    frames: dict,
    path=None,
    *,
    corrected: dict | None = None,
    fps: int = 6,
    dpi: int = 72,
    video=None,
    title: str = "decoded x̂0 over the steps",
):
    """Animate images side by side over the steps, e.g. the decoded x̂0 of plain vs safe sampling.

    Args:
        frames: {name: array (steps, H, W, 3) in [0, 1]}, e.g. ``out.x0_previews_guided[:, 0]``
            from ``SafeStableDiffusionPipeline(..., record_previews=True)``; all the same length.
        path: where to write the GIF; video: an MP4 too, where ffmpeg exists.
        corrected: {name: bool array (steps,)}: frames where CDTC corrected get a red frame.
    Returns:
        The ``matplotlib.animation.FuncAnimation``.
    """
    names = list(frames)
    arrays = {k: np.clip(np.asarray(v, dtype=float), 0, 1) for k, v in frames.items()}
    steps = {a.shape[0] for a in arrays.values()}
    if len(steps) != 1 or any(a.ndim != 4 for a in arrays.values()):
        raise ValueError("frames must be arrays (steps, H, W, 3) of the same number of steps")
    steps = steps.pop()
    corrected = corrected or {}
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), squeeze=False)
    axes = axes[0]
    images = []
    for ax, name in zip(axes, names):
        images.append(ax.imshow(arrays[name][0]))
        ax.set(xticks=[], yticks=[])
        ax.set_title(name, fontsize=11)
    label = fig.suptitle("", fontsize=11)

    def draw(k):
        for ax, im, name in zip(axes, images, names):
            im.set_data(arrays[name][k])
            hit = name in corrected and bool(np.asarray(corrected[name])[k])
            for spine in ax.spines.values():
                spine.set(color=HARMFUL_COLOR if hit else "black", linewidth=4 if hit else 1)
        label.set_text(f"{title}: step {k + 1}/{steps}")
        return images

    fig.tight_layout()
    return _save_animation(fig, draw, steps, path, fps, dpi, video)


def gif_html(path, *, width: int | None = None) -> str:
    """An ``<img>`` tag with the GIF at ``path`` inlined (base64), for ``IPython.display.HTML``:
    the animation then travels inside the notebook and its docs page."""
    import base64
    from pathlib import Path

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    size = f' width="{int(width)}"' if width else ""
    return f'<img src="data:image/gif;base64,{data}"{size} alt="animation">'
