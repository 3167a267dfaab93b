"""Regenerate the figures of the docs site from the library (run from the repository root).

    .venv/bin/python docs/make_figures.py

Writes ``docs/img/method.png``: plain DDIM, x̂0-space safe sampling with CDTC, and negative
guidance in x_t space on the 2-D ring (exact ε-oracle, no training, no downloads), and
``docs/img/trajectories.gif``: the same three samplers animated over the steps (the GIF the
README opens with; ``safescore demo --animate`` writes the same kind of file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot  # noqa: E402
import torch  # noqa: E402

from safescore import NegativeGuidance, SafeGuidance, ddim_sample, metrics, toy  # noqa: E402
from safescore.plotting import animate_trajectories, plot_comparison  # noqa: E402

# Labels readable at the size the README and the home page show the figure (about 900 px wide).
READABLE = {
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "figure.titlesize": 14,
}

HERE = Path(__file__).resolve().parent


def method_figure(out: Path, *, n: int = 2000, steps: int = 50, seed: int = 0, dpi: int = 90):
    """Plain vs safe vs negative guidance on the ring; returns the harmful rates."""
    problem = toy.ring_problem()
    eps_model = problem.eps_model()
    x_T = problem.noise(n, torch.Generator().manual_seed(seed))
    strategies = {
        "plain DDIM": None,
        "safe (x̂0 step + CDTC)": SafeGuidance(
            problem.density, problem.gamma, threshold=problem.threshold
        ),
        "negative guidance (x_t)": NegativeGuidance(
            problem.density, problem.negative_gamma, threshold=problem.threshold
        ),
    }
    results, rates = {}, {}
    for name, guidance in strategies.items():
        r = ddim_sample(eps_model, problem.schedule, x_T, steps, guidance=guidance, record=True)
        results[name] = r
        rates[name] = metrics.harmful_rate(r.samples, problem.mixture, problem.harmful)
    with matplotlib.rc_context(READABLE):
        fig = _comparison(results, rates, problem, steps)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return rates


def _comparison(results, rates, problem, steps):
    return plot_comparison(
        results,
        mixture=problem.mixture,
        harmful=problem.harmful,
        n_traj=25,
        suptitle=(
            "Ring, 2 harmful modes (red), exact ε-oracle, "
            f"{steps} DDIM steps.\nHarmful rate: "
            + ", ".join(f"{k.split(' (')[0]} {v:.1%}" for k, v in rates.items())
        ),
    )


def trajectories_gif(out: Path, *, steps: int = 50, seed: int = 0, n: int = 40) -> Path:
    """x_t and x̂0 of ``n`` samples over the steps: plain, negative guidance, safe (same noise)."""
    problem = toy.ring_problem()
    eps_model = problem.eps_model()
    x_T = problem.noise(n, torch.Generator().manual_seed(seed))
    strategies = {
        "plain DDIM": None,
        "negative guidance (x_t)": NegativeGuidance(
            problem.density, problem.negative_gamma, threshold=problem.threshold
        ),
        "safe: x̂0 step + CDTC": SafeGuidance(
            problem.density, problem.gamma, threshold=problem.threshold
        ),
    }
    results = {
        name: ddim_sample(eps_model, problem.schedule, x_T, steps, guidance=g, record=True)
        for name, g in strategies.items()
    }
    anim = animate_trajectories(
        results, out, n=n, mixture=problem.mixture, harmful=problem.harmful, fps=8, dpi=72
    )
    matplotlib.pyplot.close(anim._fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "img" / "method.png")
    parser.add_argument("--gif", type=Path, default=HERE / "img" / "trajectories.gif")
    parser.add_argument("--dpi", type=int, default=90)
    args = parser.parse_args(argv)
    rates = method_figure(args.out, dpi=args.dpi)
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out} ({size_kb:.0f} KB); harmful rates: {rates}")
    gif = trajectories_gif(args.gif)
    print(f"wrote {gif} ({gif.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
