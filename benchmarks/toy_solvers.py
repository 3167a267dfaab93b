"""Fewer steps: DPM-Solver++(2M) vs DDIM with the same x̂0 correction (CDTC) on the ring toy.

Reports, for 10 / 20 / 25 / 50 steps, the harmful rate and the energy distance to the safe data
for DDIM and DPM-Solver++(2M), plain and safe (γ scaled as γ₁₀₀ · 100 / steps, since the
correction is applied once per step), against 50-step DDIM as the reference.

    python benchmarks/toy_solvers.py [--samples 20000] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from safescore import SafeGuidance, ddim_sample, dpm_solver_sample, metrics
from safescore.toy import ring_problem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=20000, help="samples per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    parser.add_argument("--steps", default="10,20,25,50", help="comma-separated step counts")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    p = ring_problem()
    x_T = p.noise(args.samples, torch.Generator().manual_seed(args.seed))
    ref = p.safe_mixture.sample(4000, torch.Generator().manual_seed(args.seed + 1))
    eps = p.eps_model()
    rows = []
    for n in [int(s) for s in args.steps.split(",")]:
        gamma = p.gamma * 100 / n
        for solver, fn in (("DDIM", ddim_sample), ("DPM-Solver++(2M)", dpm_solver_sample)):
            for mode, guidance in (
                ("plain", None),
                ("safe", SafeGuidance(p.density, gamma, p.threshold)),
            ):
                t0 = time.perf_counter()
                x = fn(eps, p.schedule, x_T, n, guidance=guidance).samples
                rows.append(
                    {
                        "steps": n,
                        "solver": solver,
                        "mode": mode,
                        "gamma": gamma if guidance else None,
                        "harmful_rate": metrics.harmful_rate(x, p.mixture, p.harmful),
                        "energy_distance_to_safe": metrics.energy_distance(x, ref),
                        "seconds": time.perf_counter() - t0,
                    }
                )
    print(f"ring toy, exact oracle, {args.samples} samples, seed {args.seed}")
    print("| steps | solver | mode | γ | harmful rate | energy dist. to safe data | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        g = "" if r["gamma"] is None else f"{r['gamma']:.4f}"
        print(
            f"| {r['steps']} | {r['solver']} | {r['mode']} | {g} | {r['harmful_rate']:.4f} | "
            f"{r['energy_distance_to_safe']:.4f} | {r['seconds']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
