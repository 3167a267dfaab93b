"""Cost of safe sampling on Stable Diffusion, side by side with plain sampling and the peers.

For one component shape, device, resolution, number of steps and batch, every mode generates the
same batch (same prompt, seed, classifier-free guidance 7.5, final VAE decode to an array) and
reports per image: wall seconds (median over ``--repeats`` timed calls after one uncounted
warm-up call) and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: peak RSS,
``ru_maxrss``, which only grows within a process, hence one process per mode). Memory is given
as the peak and as the extra above the built models (UNet, VAE, text encoder and whatever the
mode adds: CLIP, TAESD). Ratios are to ``plain`` in the same run.

Modes:
    plain            DDIM, no guidance (SafeStableDiffusionPipeline, == diffusers' pipeline)
    safe-none        SafeGuidance whose threshold no sample reaches: decode + p_h under no_grad
                     at every step, no gradient
    safe-all         SafeGuidance with threshold None: every sample corrected at every step
                     (p_h check, then forward + backward through the decoder and CLIP)
    negative         NegativeGuidance every step (backward through the UNet, decoder and CLIP)
    sld-medium       diffusers' StableDiffusionPipelineSafe, SafetyConfig.MEDIUM, same components
  speed-ups (all "every sample corrected" unless named -none):
    safe-all-window  γ only in the window 0.2..0.8 of the trajectory (safescore.window)
    safe-all-every2  p_h checked (and corrected) every 2nd step (check_every=2)
    safe-none-taesd  the density decodes with AutoencoderTiny (TAESD) instead of the VAE
    safe-all-taesd     "
    safe-all-ckpt    gradient checkpointing of the VAE decoder in the backward pass
    safe-all-pool2   the density decodes the latent average-pooled 2x (4x fewer decoder FLOPs)
    safe-all-amp     density pass under torch.autocast (bf16 on CPU, fp16 on CUDA)
    plain-dpm        DPM-Solver++(2M) at --dpm-steps steps (default: half of --steps)
    safe-all-dpm     DPM-Solver++(2M) at --dpm-steps with every sample corrected

The density is the thesis' "single" preset (CLIP cosine with "violence and nudity", γ = 75):
the tiny CLIP for ``--shape tiny``, CLIP ViT-B/16 for ``--shape sd15``. ALL WEIGHTS ARE RANDOM
(built from configs, nothing downloaded): the costs are real, the images are noise. With random
weights the CLIP cosines are about constant and may be negative: "every sample corrected" is
therefore forced with threshold None, not with a low threshold.

Examples:
    python benchmarks/sd_overhead.py                                # tiny, CPU, 128², 5 steps
    python benchmarks/sd_overhead.py --resolution 64 --json out.json
    python benchmarks/sd_overhead.py --modes plain safe-none safe-all negative sld-medium
    python benchmarks/sd_overhead.py --shape sd15 --device cuda --resolution 512 --steps 50 \\
        --batch 4 --repeats 3 --json sd15_h100.json                 # the GPU table

Each mode runs in its own process (peak RSS and the models built are then the mode's own), with
``--threads`` torch threads (default 1, so that timings on a shared machine are not disturbed by
busy-waiting threads). ``--in-process`` runs all modes in one process (saves the model builds on
a GPU; the CUDA peaks stay per mode, but "models" then means everything built so far, and peak
RSS is meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CORE_MODES = ("plain", "safe-none", "safe-all", "negative", "sld-medium")
SPEEDUP_MODES = (
    "safe-all-window",
    "safe-all-every2",
    "safe-none-taesd",
    "safe-all-taesd",
    "safe-all-ckpt",
    "safe-all-pool2",
    "safe-all-amp",
    "plain-dpm",
    "safe-all-dpm",
)
MODES = CORE_MODES + SPEEDUP_MODES
PROMPT = "a photo of a cat"
NEVER = 1.0  # the top of a cosine's range: random-weight cosines never reach it


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _parse_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class Bench:
    """Components built once per process, guidance objects per mode."""

    def __init__(self, args):
        import torch

        from safescore.sd import tiny

        self.args = args
        self.torch = torch
        self.device = torch.device(args.device)
        self.dtype = _parse_dtype(args.dtype)
        if args.shape == "tiny":
            self.components = tiny.tiny_components(0)
            for name in ("vae", "text_encoder", "unet"):
                self.components[name].to(self.device, self.dtype)
        else:
            self.components = tiny.sd15_components(0, dtype=self.dtype, device=self.device)
        self._pipe = self._sld = self._density = self._taesd = None

    # ---------------------------------------------------------------- lazily built pieces
    @property
    def pipe(self):
        if self._pipe is None:
            from safescore.sd import SafeStableDiffusionPipeline

            self._pipe = SafeStableDiffusionPipeline(**self.components)
            self._pipe.random_weights = True
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    @property
    def sld(self):
        if self._sld is None:
            from diffusers import StableDiffusionPipelineSafe

            self._sld = StableDiffusionPipelineSafe(
                **self.components,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            self._sld.set_progress_bar_config(disable=True)
        return self._sld

    @property
    def density(self):
        if self._density is None:
            from safescore.sd import tiny
            from safescore.sd.presets import make_density

            if self.args.shape == "tiny":
                clip_model, tok = tiny.tiny_clip(0)
                clip_model = clip_model.to(self.device, self.dtype)
            else:
                clip_model, tok = tiny.sd15_clip(0, dtype=self.dtype, device=self.device)
            self._density = make_density("single", clip_model=clip_model, tokenizer=tok)
        return self._density

    @property
    def taesd(self):
        if self._taesd is None:
            from safescore.sd import tiny
            from safescore.sd.latent import load_tiny_vae

            if self.args.taesd:
                self._taesd = load_tiny_vae(
                    self.args.taesd, torch_dtype=self.dtype, device=self.device
                )
            elif self.args.shape == "tiny":
                self._taesd = tiny.tiny_taesd(0).to(self.device, self.dtype)
            else:
                self._taesd = tiny.sd15_taesd(0, dtype=self.dtype, device=self.device)
        return self._taesd

    def build(self, mode: str) -> None:
        """Build what ``mode`` needs (before the memory baseline is taken)."""
        needed = ["sld"] if mode == "sld-medium" else ["pipe"]
        if mode not in ("plain", "plain-dpm", "sld-medium"):
            needed.append("density")
        if "taesd" in mode:
            needed.append("taesd")
        for name in needed:
            getattr(self, name)

    # ---------------------------------------------------------------- one call of a mode
    def caller(self, mode: str):
        """A function ``call()`` generating the batch once in ``mode``."""
        from safescore import NegativeGuidance, SafeGuidance, window
        from safescore.sd.latent import latent_guidance

        a, torch = self.args, self.torch
        prompts = [PROMPT] * a.batch
        size = dict(height=a.resolution, width=a.resolution)

        def gen():
            return torch.Generator().manual_seed(a.seed)

        if mode == "sld-medium":
            from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

            def call():
                return self.sld(
                    prompts, num_inference_steps=a.steps, generator=gen(), output_type="np",
                    **size, **SafetyConfig.MEDIUM,
                )  # fmt: skip

            return call
        steps, solver = a.steps, "ddim"
        if mode.endswith("-dpm"):
            steps, solver = a.dpm_steps or max(2, a.steps // 2), "dpm++2m"
        vae, options = self.components["vae"], {}
        guidance = None
        if mode == "negative":
            guidance = NegativeGuidance(self.density, a.gamma)
        elif mode.startswith("safe-"):
            threshold = NEVER if mode.startswith("safe-none") else None
            gamma = window(a.gamma, *a.window) if mode.endswith("-window") else a.gamma
            check_every = 2 if mode.endswith("-every2") else 1
            guidance = SafeGuidance(self.density, gamma, threshold, check_every=check_every)
            if "taesd" in mode:
                vae = self.taesd
            if mode.endswith("-ckpt"):
                options["checkpoint"] = True
            if mode.endswith("-pool2"):
                options["latent_pool"] = 2
            if mode.endswith("-amp"):
                options["autocast"] = (
                    torch.float16 if self.device.type == "cuda" else torch.bfloat16
                )
        guidance = latent_guidance(guidance, vae, **options)

        def call():
            return self.pipe(
                prompts, guidance=guidance, num_inference_steps=steps, generator=gen(),
                output_type="np", solver=solver, **size,
            )  # fmt: skip

        return call

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def measure(bench: Bench, mode: str) -> dict:
    """Build, warm up, time ``--repeats`` calls of one mode; memory above the built models."""
    torch, a = bench.torch, bench.args
    cuda = bench.device.type == "cuda"
    bench.build(mode)
    call = bench.caller(mode)
    bench.sync()
    if cuda:
        models_mb = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    models_rss = _rss_mb()
    call()  # warm-up: one-time allocations, kernel selection, lazy imports
    times = []
    for _ in range(a.repeats):
        bench.sync()
        start = time.perf_counter()
        call()
        bench.sync()
        times.append(time.perf_counter() - start)
    per_image = [t / a.batch for t in times]
    row = dict(mode=mode, seconds_per_image=statistics.median(per_image), repeats=per_image)
    row["steps"] = (a.dpm_steps or max(2, a.steps // 2)) if mode.endswith("-dpm") else a.steps
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
        row.update(models_mb=models_mb, peak_mb=peak, extra_mb=peak - models_mb, memory="cuda")
    else:
        peak = _rss_mb()
        row.update(models_mb=models_rss, peak_mb=peak, extra_mb=peak - models_rss, memory="rss")
    return row


def machine(args) -> dict:
    import diffusers
    import torch
    import transformers

    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        transformers=transformers.__version__,
        cpu=_cpu_name(),
        cpu_count=os.cpu_count(),
        torch_threads=args.threads,
        load_average=os.getloadavg()[0],
    )
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _worker_argv(args, mode: str) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--worker", "--modes", mode]
    for name in ("shape", "device", "dtype", "resolution", "steps", "batch", "repeats"):
        argv += [f"--{name}", str(getattr(args, name))]
    argv += ["--threads", str(args.threads), "--gamma", str(args.gamma), "--seed", str(args.seed)]
    argv += ["--window", *map(str, args.window)]
    if args.dpm_steps:
        argv += ["--dpm-steps", str(args.dpm_steps)]
    if args.taesd:
        argv += ["--taesd", args.taesd]
    return argv


def run_isolated(args) -> list[dict]:
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    env.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for mode in args.modes:
        done = subprocess.run(
            _worker_argv(args, mode), capture_output=True, text=True, env=env, check=False
        )
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not lines:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"mode {mode} failed (exit {done.returncode})")
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
        _progress(rows[-1])
    return rows


def run_in_process(args) -> list[dict]:
    import torch

    torch.set_num_threads(args.threads)
    bench = Bench(args)
    rows = []
    for mode in args.modes:
        rows.append(measure(bench, mode))
        if not args.worker:
            _progress(rows[-1])
    return rows


def _progress(row) -> None:
    print(
        f"  {row['mode']:<16} {row['seconds_per_image']:8.3f} s/image  "
        f"peak {row['peak_mb']:7.0f} MB (+{row['extra_mb']:.0f})",
        file=sys.stderr,
    )


def table(rows: list[dict], args, info: dict) -> str:
    """Markdown: per mode seconds per image, ratio to plain, memory and ratios."""
    by = {r["mode"]: r for r in rows}
    plain, neg = by.get("plain"), by.get("negative")
    mem = "peak CUDA allocated" if rows[0]["memory"] == "cuda" else "peak RSS"
    lines = [
        f"RANDOM WEIGHTS ({args.shape} components), {args.device} {args.dtype}, "
        f"{args.resolution}² images, batch {args.batch}, {args.steps} steps "
        f"(dpm modes: {args.dpm_steps or max(2, args.steps // 2)}), median of {args.repeats} "
        f"after 1 warm-up; {info['cpu']} ({info['cpu_count']} cores), {args.threads} torch "
        f"thread(s), load average {info['load_average']:.1f}"
        + (f"; GPU {info['gpu']}" if "gpu" in info else ""),
        "",
        f"| mode | steps | s / image | × plain | {mem} | × plain | extra over models "
        "| extra × negative's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t_ratio = f"{r['seconds_per_image'] / plain['seconds_per_image']:.2f}×" if plain else "-"
        m_ratio = f"{r['peak_mb'] / plain['peak_mb']:.2f}×" if plain else "-"
        e_ratio = f"{r['extra_mb'] / neg['extra_mb']:.2f}×" if neg and neg["extra_mb"] > 0 else "-"
        lines.append(
            f"| {r['mode']} | {r['steps']} | {r['seconds_per_image']:.3f} | {t_ratio} | "
            f"{r['peak_mb']:.0f} MB | {m_ratio} | +{r['extra_mb']:.0f} MB | {e_ratio} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shape", choices=("tiny", "sd15"), default="tiny",
                   help="random-weight components: tiny, or SD v1.5's architecture (sd15)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:i] (default cpu)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="component dtype (default float32 on cpu, float16 on cuda)")  # fmt: skip
    p.add_argument("--resolution", type=int, default=128, help="image side (default 128)")
    p.add_argument("--steps", type=int, default=5, help="DDIM steps (default 5)")
    p.add_argument("--dpm-steps", type=int, default=None,
                   help="DPM-Solver++ steps of the -dpm modes (default: half of --steps)")  # fmt: skip
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per mode (default 3)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, metavar="MODE",
                   help=f"modes to run (default all): {', '.join(MODES)}")  # fmt: skip
    p.add_argument("--gamma", type=float, default=75.0, help="γ of every guidance (default 75)")
    p.add_argument("--window", type=float, nargs=2, default=(0.2, 0.8), metavar=("START", "END"),
                   help="fractions of the trajectory of safe-all-window (default 0.2 0.8)")  # fmt: skip
    p.add_argument("--taesd", default=None,
                   help="AutoencoderTiny weights (folder or hub id) for the -taesd modes; "
                   "default: random weights of the TAESD architecture")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial latents")
    p.add_argument("--in-process", action="store_true",
                   help="all modes in one process (CUDA peaks only; see above)")  # fmt: skip
    p.add_argument("--json", default=None, help="write machine, arguments and rows to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dtype is None:
        args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    for name in ("resolution", "steps", "batch", "repeats", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.dpm_steps is not None and args.dpm_steps < 1:
        p.error("--dpm-steps must be >= 1")
    if not 0 <= args.window[0] <= args.window[1] <= 1:
        p.error("--window needs 0 <= START <= END <= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        rows = run_in_process(args)
        print("RESULT " + json.dumps(rows[0]))
        return 0
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    rows = run_in_process(args) if args.in_process else run_isolated(args)
    info = machine(args)
    text = table(rows, args, info)
    print(text)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(
                dict(machine=info, args=vars(args), command=sys.argv, rows=rows, table=text),
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
