"""Throughput of the toy sampler: N 2-D points x S DDIM steps on the ring problem.

Times, per strategy, the whole ``ddim_sample`` call (median of ``--repeats`` runs after one
warm-up run that is not counted):

* the exact ε-oracle of the noised Gaussian mixture (float64): plain DDIM,
  ``SafeGuidance`` (x̂0-space step with the CDTC threshold) and ``NegativeGuidance``
  (x_t-space gradient through the ε-model, same threshold);
* a ``ScoreMLP`` ε-model (float32, RANDOM untrained weights: only its cost matters here, its
  samples mean nothing): plain and ``SafeGuidance``;
* ``safescore demo`` end to end (a fresh process, default settings), when the CLI exists.

Usage (from the repository root):

    .venv/bin/python benchmarks/toy_throughput.py                 # full: 100k points x 100 steps
    .venv/bin/python benchmarks/toy_throughput.py --n 10000 --repeats 1 --json /tmp/toy.json

The table gives seconds per run and million point-steps per second; ratios are to plain
sampling with the same ε-model in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from safescore import NegativeGuidance, SafeGuidance, ddim_sample, metrics, toy
from safescore.toy.nets import ScoreMLP

REPO = Path(__file__).resolve().parents[1]
CASES = ("oracle", "mlp", "demo")


def _time(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` uncounted calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def _row(case, model, strategy, n, steps, seconds, plain_median=None, harmful_rate=None):
    med = statistics.median(seconds)
    return {
        "case": case,
        "model": model,
        "strategy": strategy,
        "n": n,
        "steps": steps,
        "seconds": seconds,
        "median_s": med,
        "min_s": min(seconds),
        "mpoint_steps_per_s": n * steps / med / 1e6 if steps else None,
        "ratio_to_plain": med / plain_median if plain_median else None,
        "harmful_rate": harmful_rate,
    }


def bench_sampler(case, model_name, eps_model, problem, x_T, steps, strategies, repeats, echo):
    """Time ``ddim_sample`` for each {name: guidance}; the first entry is the plain baseline."""
    rows, plain = [], None
    for name, guidance in strategies.items():
        out = {}

        def run(guidance=guidance, out=out):
            out["r"] = ddim_sample(eps_model, problem.schedule, x_T, steps, guidance=guidance)

        seconds = _time(run, repeats)
        rate = metrics.harmful_rate(
            out["r"].samples.to(torch.float64), problem.mixture, problem.harmful
        )
        plain = plain or statistics.median(seconds)
        rows.append(_row(case, model_name, name, x_T.shape[0], steps, seconds, plain, rate))
        echo(f"  {case:6s} {name:18s} median {rows[-1]['median_s']:.2f} s")
    return rows


def bench_demo(repeats: int, echo) -> list[dict]:
    """``safescore demo`` end to end in a subprocess (default settings, figures included)."""
    exe = Path(sys.executable).with_name("safescore")
    if not (REPO / "safescore" / "cli.py").exists() or not exe.exists():
        echo("  demo: skipped (no safescore/cli.py or no `safescore` executable)")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(exe), "demo", "--out", str(Path(tmp) / "demo"), "--quiet"]

        def run():
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=tmp)

        seconds = _time(run, repeats)
    echo(f"  demo   end to end         median {statistics.median(seconds):.2f} s")
    return [_row("demo", "exact oracle", "`safescore demo` (4 strategies)", 5000, 100, seconds)]


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": None,
        "load_average_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def format_table(rows: list[dict]) -> str:
    head = "| case | ε-model | strategy | points × steps | median s | min s | M point-steps/s | × plain | harmful rate |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        ratio = f"{r['ratio_to_plain']:.2f}" if r["ratio_to_plain"] else "–"
        rate = f"{r['harmful_rate']:.1%}" if r["harmful_rate"] is not None else "–"
        mps = f"{r['mpoint_steps_per_s']:.2f}" if r["mpoint_steps_per_s"] else "–"
        lines.append(
            f"| {r['case']} | {r['model']} | {r['strategy']} | {r['n']:,} × {r['steps']} "
            f"| {r['median_s']:.2f} | {r['min_s']:.2f} | {mps} | {ratio} | {rate} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=100_000, help="points per run")
    parser.add_argument("--steps", type=int, default=100, help="DDIM steps")
    parser.add_argument(
        "--mlp-n", type=int, default=None, help="points per run for the MLP case (default: --n)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and of the MLP weights")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}"
    )
    parser.add_argument(
        "--mlp-hidden", type=int, default=128, help="ScoreMLP width (the demo's --trained uses 128)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write rows here")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = sorted(set(cases) - set(CASES))
    if bad:
        parser.error(f"--cases must be a subset of {CASES}, got {bad}")
    if args.mlp_n is not None and not 1 <= args.mlp_n <= args.n:
        parser.error("--mlp-n must be between 1 and --n")
    for name in ("n", "steps", "repeats", "mlp_hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    def echo(msg):
        print(msg, file=sys.stderr, flush=True)

    problem = toy.ring_problem()
    safe = SafeGuidance(problem.density, problem.gamma, threshold=problem.threshold)
    negative = NegativeGuidance(
        problem.density, problem.negative_gamma, threshold=problem.threshold
    )
    x_T = problem.noise(args.n, torch.Generator().manual_seed(args.seed))
    rows: list[dict] = []
    if "oracle" in cases:
        strategies = {"plain": None, "safe (CDTC)": safe, "negative": negative}
        rows += bench_sampler(
            "oracle", "exact oracle (float64)", problem.eps_model(), problem, x_T, args.steps,
            strategies, args.repeats, echo,
        )  # fmt: skip
    if "mlp" in cases:
        torch.manual_seed(args.seed)
        model = ScoreMLP(problem.dim, hidden=args.mlp_hidden).eval()
        name = f"ScoreMLP {args.mlp_hidden}×3, random weights (float32)"
        rows += bench_sampler(
            "mlp", name, model, problem, x_T[: args.mlp_n or args.n].float(), args.steps,
            {"plain": None, "safe (CDTC)": safe}, args.repeats, echo,
        )  # fmt: skip
    if "demo" in cases:
        rows += bench_demo(args.repeats, echo)

    info = machine_info()
    load = info["load_average_1_5_15min"]
    print(
        f"machine: {info['cpu']}, {info['cpu_count']} CPU cores, torch {info['torch']} "
        f"({info['torch_threads']} threads), no GPU used; median of {args.repeats} runs, "
        "1 warm-up run excluded"
        + (
            f"; load average at the end {load[0]:.1f} (1 min), {load[1]:.1f} (5 min)"
            if load
            else ""
        )
    )
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": info,
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
