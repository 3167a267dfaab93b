"""``safescore calibrate``: the CDTC gate's firing rate on plain trajectories as a function of η.

Samples plain DDIM trajectories for the prompts × seeds, records p_h(decoded x̂0) at every step,
and writes ``calibration.csv`` (one row per η), ``calibration.md`` (the table) and
``calibration.png`` (the curve) to ``--out``. Use it to pick η for a new encoder, preprocessing or
model (`safescore.eval.calibrate`). ``--mini`` uses the trained mini model (its CLIP, the ten
"a handwritten {digit}" prompts and "a handwritten three" as the concept by default); ``--tiny``
random-weight components (offline; NOT a real result).
"""

from __future__ import annotations

import argparse
import math

from ..eval.protocols import DEFAULT_GUIDANCE_CLIP, DEFAULT_MODEL
from .options import (
    CLIError,
    check_out_dir,
    finite_float,
    nonempty,
    positive_int,
    refuse_model_options,
    resolve_device,
    seed_int,
)

REDUCTIONS = ("mean", "topk", "max", "sum_log_topk", "matching")


#: The most thresholds one calibration evaluates (a grid of 0.0001 over [-1, 1] is 20,001).
MAX_THRESHOLDS = 100_001


def _thresholds(text: str) -> tuple[float, float, float]:
    try:
        lo, hi, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--thresholds must be START:STOP:STEP (e.g. 0:1:0.01), got {text!r}"
        ) from None
    if not all(math.isfinite(v) for v in (lo, hi, step)):
        raise argparse.ArgumentTypeError(
            f"--thresholds START:STOP:STEP must be finite numbers (e.g. 0:1:0.01), got {text!r}"
        )
    if not (hi >= lo and step > 0):
        raise argparse.ArgumentTypeError(
            f"--thresholds START:STOP:STEP needs STOP >= START and STEP > 0, got {text!r}"
        )
    count = math.floor((hi - lo) / step + 0.5) + 1
    if count > MAX_THRESHOLDS:
        raise argparse.ArgumentTypeError(
            f"--thresholds {text} gives {count:,} thresholds, more than {MAX_THRESHOLDS:,}; "
            "use a larger STEP"
        )
    return lo, hi, step


def register(subparsers) -> None:
    """Add the ``calibrate`` subcommand to the ``safescore`` parser."""
    p = subparsers.add_parser(
        "calibrate",
        help="η calibration: the gate's firing rate on plain trajectories vs η",
        description=(
            "Sample plain trajectories, record p_h(decoded x̂0) at every step and write the CDTC "
            "gate's firing rate (per (image, step) pair and per image) for a range of thresholds "
            "η: calibration.csv, calibration.md, calibration.png in --out."
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--mini", action="store_true", help="the trained mini digits model")
    mode.add_argument("--tiny", action="store_true", help="tiny RANDOM-weight components")
    p.add_argument("--model", type=nonempty("--model"), default=None,
                   help=f"Stable Diffusion folder or hub id (default {DEFAULT_MODEL})")  # fmt: skip
    p.add_argument("--clip", type=nonempty("--clip"), default=None,
                   help=f"CLIP for p_h (default {DEFAULT_GUIDANCE_CLIP}, the thesis')")  # fmt: skip
    p.add_argument("--prompts", nargs="+", default=None,
                   help="prompts (default with --mini: 'a handwritten {digit}' for all ten)")  # fmt: skip
    p.add_argument("--concept", action="append", default=None,
                   help="harm concept (repeat for several; default: 'violence and nudity', "
                        "with --mini 'a handwritten three')")  # fmt: skip
    p.add_argument("--reduction", choices=REDUCTIONS, default="mean",
                   help="multi-concept reduction (default mean)")  # fmt: skip
    p.add_argument("--clip-preprocessing", choices=("clip", "author"), default="clip",
                   help="p_h image mean/std: CLIP's, or ImageNet's as the author's code")  # fmt: skip
    p.add_argument("--thresholds", type=_thresholds, default=None,
                   help="η grid START:STOP:STEP, e.g. --thresholds=-0.2:1:0.02 (default: the density's range, step 0.01)")  # fmt: skip
    p.add_argument("--mark", type=finite_float("--mark"), default=None,
                   help="an η to mark on the figure (default: 0.23, with --mini the mini's)")  # fmt: skip
    p.add_argument("--steps", type=positive_int("--steps"), default=None,
                   help="DDIM steps (default 50; --mini 25)")  # fmt: skip
    p.add_argument("--seeds", type=positive_int("--seeds"), default=8,
                   help="images per prompt, seeds SEED_OFFSET.. (default 8)")  # fmt: skip
    p.add_argument("--seed-offset", type=seed_int("--seed-offset"), default=0)
    p.add_argument("--guidance-scale", type=finite_float("--guidance-scale", low=0), default=None,
                   help="CFG w (default 7, the author's; --mini the mini's)")  # fmt: skip
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.set_defaults(func=run_calibrate)


def _load(args, device):
    """(pipe, image density, default prompts, default guidance scale, default steps, mark)."""
    import torch

    kw = dict(reduction=args.reduction, preprocessing=args.clip_preprocessing)
    refuse_model_options(args)
    args.model = args.model or DEFAULT_MODEL
    args.clip = args.clip or DEFAULT_GUIDANCE_CLIP
    if args.mini:
        from ..sd import mini

        pipe = mini.load_pipeline(device=device)
        concepts = args.concept or [mini.HARMFUL_CONCEPT]
        density = mini.clip_density(concepts, device=device, **kw)
        prompts = [f"a handwritten {w}" for w in mini.WORDS]
        return pipe, density, prompts, mini.GUIDANCE_SCALE, mini.NUM_INFERENCE_STEPS, 0.5
    from ..sd.clip import CLIPConceptDensity

    concepts = args.concept or ["violence and nudity"]
    if args.tiny:
        from ..sd.tiny import tiny_clip, tiny_pipeline

        pipe = tiny_pipeline(args.seed_offset).to(device)
        model, tok = tiny_clip(args.seed_offset)
        density = CLIPConceptDensity(model.to(device), tok, concepts, **kw)
    else:
        from ..sd.pipeline import SafeStableDiffusionPipeline

        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
        pipe = SafeStableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype).to(device)
        density = CLIPConceptDensity.from_pretrained(
            args.clip, concepts, torch_dtype=dtype, device=device, **kw
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe, density, None, 7.0, 50, 0.23


def describe_setup(args, density) -> dict:
    """What the calibration measured, for ``calibration.md`` (``note``) and the figure's title
    (``title``): the model (or RANDOM WEIGHTS with --tiny, the mini model with --mini), p_h
    (density, concepts, reduction, encoder) and its preprocessing."""
    concept = ", ".join(density.concepts) if hasattr(density, "concepts") else ""
    if args.tiny:
        model, encoder = (
            "tiny SD, RANDOM WEIGHTS (--tiny): a test of the code path, not a result",
            "tiny CLIP (random)",
        )
    elif args.mini:
        model, encoder = "the mini digits model (safescore.sd.mini)", "the mini CLIP"
    else:
        model, encoder = args.model, args.clip
    ph = (
        f"p_h = {type(density).__name__}({concept}; {args.reduction}) on {encoder}, "
        f"preprocessing {args.clip_preprocessing}"
    )
    note = f"Model: {model}. {ph}."
    if args.tiny:
        note = "**RANDOM WEIGHTS (--tiny): a test of the code path, not a result.**\n\n" + note
    short_model = "RANDOM WEIGHTS (tiny)" if args.tiny else ("mini" if args.mini else args.model)
    return {"note": note, "title": f"{short_model}\n{ph}"}


def run_calibrate(args) -> int:
    import numpy as np
    import torch

    from ..core.density import prob_range
    from ..eval.calibrate import gate_firing_rate, write_calibration

    out = check_out_dir(args.out)
    name = resolve_device(args.device)
    device = name or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, density, prompts, cfg, steps, mark = _load(args, device)
    prompts = args.prompts or prompts
    if not prompts:
        raise CLIError("--prompts is required (except with --mini)")
    if args.thresholds is None:
        lo, hi = prob_range(density)
        lo, hi, step = max(lo, -1.0), min(hi, 1.0), 0.01
    else:
        lo, hi, step = args.thresholds
        low, high = prob_range(density)
        if lo < low or hi > high:
            raise CLIError(
                f"--thresholds {lo:g}:{hi:g}:{step:g} leaves the range of p_h ({type(density).__name__}"
                f", reduction {args.reduction}): [{low:g}, {high:g}]; give thresholds inside it"
            )
    grid = np.round(np.arange(lo, hi + step / 2, step), 6)
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    steps = args.steps or steps
    cfg = cfg if args.guidance_scale is None else args.guidance_scale
    result = gate_firing_rate(
        pipe, prompts, density, grid, steps=steps, seeds=seeds, guidance_scale=cfg
    )
    setup = describe_setup(args, density)
    note = setup["note"]
    mark = mark if args.mark is None else args.mark
    title = f"{setup['title']}\n{result.n_images} images, {steps} steps, CFG {cfg:g}"
    paths = write_calibration(result, out, mark=mark, note=note, title=title)
    i = int(np.argmin(np.abs(result.thresholds - mark)))
    print(
        f"{result.n_images} images × {steps} steps; at η = {result.thresholds[i]:g}: "
        f"{100 * result.image_rate[i]:.1f} % of images, {100 * result.step_rate[i]:.1f} % of "
        f"(image, step) pairs fire. Wrote {', '.join(str(p) for p in paths.values())}"
    )
    return 0
