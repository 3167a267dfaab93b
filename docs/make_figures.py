"""Regenerate the figures of the docs site from the library (run from the repository root).

    .venv/bin/python docs/make_figures.py

Writes ``docs/img/method.png``: plain DDIM, x̂0-space safe sampling with CDTC, and negative
guidance in x_t space on the 2-D ring (exact ε-oracle, no training, no downloads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from safescore import NegativeGuidance, SafeGuidance, ddim_sample, metrics, toy  # noqa: E402
from safescore.plotting import plot_comparison  # noqa: E402

HERE = Path(__file__).resolve().parent


def method_figure(out: Path, *, n: int = 2000, steps: int = 50, seed: int = 0, dpi: int = 72):
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
    fig = plot_comparison(
        results,
        mixture=problem.mixture,
        harmful=problem.harmful,
        n_traj=25,
        suptitle=(
            "Ring with 2 harmful modes (red), exact ε-oracle, "
            f"{steps} DDIM steps — harmful rate: "
            + ", ".join(f"{k.split(' (')[0]} {v:.1%}" for k, v in rates.items())
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "img" / "method.png")
    parser.add_argument("--dpi", type=int, default=72)
    args = parser.parse_args(argv)
    rates = method_figure(args.out, dpi=args.dpi)
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out} ({size_kb:.0f} KB); harmful rates: {rates}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
