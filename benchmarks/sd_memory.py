"""Time per step and peak memory of plain, safe and negative-guidance sampling on Stable Diffusion.

Every (mode, size) runs in its own Python process, because peak RSS (``ru_maxrss``) only grows
within a process. Each worker builds the models, notes the memory, runs one warm-up call and one
timed call, and reports the extra peak memory above the built models and the seconds per step.

Modes (all with the same prompt, seed and DDIM steps, classifier-free guidance 7.5):

    plain        no guidance (diffusers' Stable Diffusion, through safescore.ddim_sample)
    safe-check   SafeGuidance whose threshold nothing reaches: p_h(decode(x̂0)) under no_grad only
    safe         SafeGuidance correcting every step: backward through VAE decoder + CLIP, not UNet
    negative     NegativeGuidance every step: backward through the UNet, the decoder and CLIP

Usage:
    python benchmarks/sd_memory.py                       # tiny random components, CPU, 64² and 128²
    python benchmarks/sd_memory.py --sizes 64 128 256 --steps 5
    python benchmarks/sd_memory.py --model sd15 --device cuda --sizes 512   # SD v1.5 shapes, GPU

All weights are RANDOM (built from configs): the costs are real, the images are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODES = ("plain", "safe-check", "safe", "negative")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def worker(mode: str, size: int, steps: int, model: str, device: str, threads: int) -> dict:
    import torch

    from safescore import NegativeGuidance, SafeGuidance
    from safescore.densities import CLIPConceptDensity
    from safescore.sd.tiny import sd15_clip, sd15_pipeline, tiny_clip, tiny_pipeline

    torch.set_num_threads(threads)
    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    if model == "tiny":
        pipe, (clip_model, tok) = tiny_pipeline(0), tiny_clip(0)
    else:
        pipe, (clip_model, tok) = sd15_pipeline(0, dtype, dev), sd15_clip(0, dtype, dev)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    clip_model = clip_model.to(dev)
    density = CLIPConceptDensity(clip_model, tok, ["violence", "nudity"], reduction="matching")
    guidance = {
        "plain": None,
        "safe-check": SafeGuidance(density, 10.0, threshold=2.0),
        "safe": SafeGuidance(density, 10.0, threshold=None),
        "negative": NegativeGuidance(density, 10.0),
    }[mode]
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    rss_models = _rss_mb()

    def call(n):
        g = torch.Generator().manual_seed(0)
        return pipe(
            "a photo", guidance=guidance, num_inference_steps=n, generator=g,
            height=size, width=size, output_type="latent",
        )  # fmt: skip

    call(1)  # warm-up (one-time allocations and kernel choices)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    call(steps)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = dict(mode=mode, size=size, steps=steps, model=model, device=device, threads=threads)
    out["ms_per_step"] = 1000 * seconds / steps
    out["models_rss_mb"] = rss_models
    out["extra_peak_rss_mb"] = _rss_mb() - rss_models
    if dev.type == "cuda":
        out["extra_peak_gpu_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="image sides")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--steps", type=int, default=5, help="DDIM steps of the timed call")
    p.add_argument(
        "--model", default="tiny", choices=("tiny", "sd15"), help="random-weight components"
    )
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--worker", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        mode, size = args.worker[0], int(args.worker[1])
        row = worker(mode, size, args.steps, args.model, args.device, args.threads)
        print("RESULT " + json.dumps(row))
        return 0
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", mode, str(size), "--steps", str(args.steps),
                   "--model", args.model, "--device", args.device, "--threads", str(args.threads)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"worker {mode} {size} failed")
            rows.append(json.loads(lines[-1][len("RESULT ") :]))
            print(
                f"  {mode:<10} {size:>4}²: {rows[-1]['ms_per_step']:8.1f} ms/step", file=sys.stderr
            )
    gpu = any("extra_peak_gpu_mb" in r for r in rows)
    print(f"RANDOM WEIGHTS ({args.model} components), device {args.device}, {args.steps} DDIM steps, "
          f"{args.threads} thread(s); models alone: {rows[0]['models_rss_mb']:.0f} MB RSS; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print()
    head = "| image | mode | time / step | vs plain | extra peak RSS |" + (
        " extra peak GPU |" if gpu else ""
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    plain = {r["size"]: r["ms_per_step"] for r in rows if r["mode"] == "plain"}
    for r in rows:
        ratio = f"{r['ms_per_step'] / plain[r['size']]:.2f}×" if r["size"] in plain else "-"
        line = (f"| {r['size']}² | {r['mode']} | {r['ms_per_step']:.0f} ms | {ratio} | "
                f"+{r['extra_peak_rss_mb']:.0f} MB |")  # fmt: skip
        if gpu:
            line += f" +{r['extra_peak_gpu_mb']:.0f} MB |"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
