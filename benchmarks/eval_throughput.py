"""Images per second of the evaluation's samplers at batch 1, 4 and 8 (``--batch-size``).

Times the built-in samplers of :mod:`safescore.eval.samplers` exactly as ``safescore evaluate``
calls them (one call per batch, one generator per image), on

* ``tiny``: random-weight tiny Stable Diffusion components (CPU by default; images are noise,
  only the cost matters);
* ``mini``: the trained mini digits model (:mod:`safescore.sd.mini`), when installed;
* ``sd15``: Stable Diffusion v1.5-shaped random-weight components (:func:`safescore.sd.tiny.
  sd15_components`), meant for a GPU in float16.

Usage (from the repository root):

    .venv/bin/python benchmarks/eval_throughput.py                       # tiny, CPU, batch 1/4/8
    .venv/bin/python benchmarks/eval_throughput.py --model sd15 --device cuda --dtype float16 \\
        --steps 50 --batches 1 4 8 --json outputs/eval_sd15.json

Each cell is the median over ``--repeats`` timed calls after one warm-up call of the same
batch size; images/s = batch / seconds. The safe sampler's correction count varies with the
random weights; its ratio to plain is what the table is for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _context(args):
    import torch

    from safescore.eval.samplers import SamplerContext

    dtype = getattr(torch, args.dtype)
    context = SamplerContext(
        steps=args.steps,
        device=args.device,
        dtype=dtype,
        tiny=args.model == "tiny",
        mini=args.model == "mini",
        height=args.size,
        width=args.size,
    )
    if args.model == "sd15":
        from safescore.sd.tiny import sd15_clip, sd15_components

        context._cache["components"] = {
            k: (v.to(device=args.device, dtype=dtype) if hasattr(v, "parameters") else v)
            for k, v in sd15_components(dtype=dtype, device=args.device).items()
        }
        context.clip_model, context.clip_tokenizer = sd15_clip(dtype=dtype, device=args.device)
    return context


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tiny", "mini", "sd15"), default="tiny")
    parser.add_argument("--samplers", nargs="+", default=["plain", "safe-single"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=None, help="image size (default: model's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)

    import torch

    from safescore.eval.samplers import sampler_factory

    if args.threads:
        torch.set_num_threads(args.threads)
    context = _context(args)
    rows = []
    prompts = ["a knight in a battle", "a lonely road at night", "a figure study", "a red apple"]
    for sampler in args.samplers:
        generate = sampler_factory(sampler)(context)
        for batch in args.batches:
            ps = [prompts[i % len(prompts)] for i in range(batch)]
            seeds = list(range(batch))

            def call(ps=ps, seeds=seeds, batch=batch, generate=generate):
                if batch == 1:
                    return [generate(ps[0], seeds[0], 7.5)]
                return generate.batch(ps, seeds, 7.5)

            call()  # warm-up
            times = []
            for _ in range(args.repeats):
                _sync(args.device)
                start = time.perf_counter()
                out = call()
                _sync(args.device)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            corrected = [g.summary()["corrected_steps"] for g in out]
            rows.append(dict(sampler=sampler, batch=batch, seconds=seconds,
                             images_per_s=batch / seconds, corrected_steps=corrected))  # fmt: skip
            print(f"{sampler:12s} batch {batch}: {seconds:.3f} s, {batch / seconds:.2f} img/s",
                  file=sys.stderr, flush=True)  # fmt: skip
    machine = dict(
        model=args.model, device=args.device, dtype=args.dtype, steps=args.steps,
        torch=torch.__version__, threads=torch.get_num_threads(), cpu=platform.processor(),
        cores=os.cpu_count(), load=os.getloadavg(),
        gpu=torch.cuda.get_device_name() if str(args.device).startswith("cuda") else None,
    )  # fmt: skip
    print(f"\n{args.model} on {args.device} ({args.dtype}), {args.steps} steps, "
          f"{machine['threads']} threads, load {machine['load'][0]:.1f}\n")  # fmt: skip
    print("| sampler | batch | s / call | images/s | vs batch 1 |")
    print("|---|---|---|---|---|")
    for r in rows:
        base = next(
            x for x in rows if x["sampler"] == r["sampler"] and x["batch"] == args.batches[0]
        )
        print(f"| {r['sampler']} | {r['batch']} | {r['seconds']:.3f} | {r['images_per_s']:.2f} | "
              f"{r['images_per_s'] / base['images_per_s']:.2f}× |")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(machine=machine, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
