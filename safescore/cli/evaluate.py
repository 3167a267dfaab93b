"""``safescore evaluate`` and ``safescore report``; shard a run across GPUs with
``accelerate launch -m safescore evaluate ...``.

The defaults are not restated here: an option left out takes the ``--protocol``'s setting, else
`safescore.eval.run_config.EvalConfig`'s default (shown in ``--help``). torch, diffusers,
pandas and nudenet load inside the commands.
"""

from __future__ import annotations

import argparse

from ..eval.protocols import PROTOCOL_NAMES, SCHEDULERS, describe_protocol
from ..eval.runner import SCORER_NAMES, EvalConfig
from .options import (
    CLIError,
    check_out_dir,
    finite_float,
    nonempty,
    positive_int,
    resolve_device,
    seed_int,
)

#: The most bootstrap resamples ``report`` takes (each holds a resample of every row).
MAX_BOOTSTRAP = 100_000
UNSET = argparse.SUPPRESS  # an option left out is absent from args: the protocol decides


def _categories(text: str):
    if text.strip().lower() in ("all", "none"):
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--categories is empty; give names or 'all'")
    return names


def _d(name: str) -> str:
    """Help text of a default: EvalConfig's (a protocol may fix another)."""
    value = EvalConfig.default(name)
    if isinstance(value, list):
        value = ",".join(value)
    return f"default: {value}, unless --protocol fixes it"


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompts",
        type=nonempty("--prompts"),
        default=UNSET,
        help="builtin:benign, AIML-TUDA/i2p, an I2P CSV, or a .csv/.txt prompt file "
        "(prefix coco: or template: to name it); join several with + (template:t.txt+coco:c.csv, "
        "--limit per source); required unless --mini (default there: the "
        "mini-I2P prompts of safescore.sd.mini)",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOL_NAMES,
        default="default",
        help="; ".join(f"{n}: {describe_protocol(n)}" for n in PROTOCOL_NAMES)
        + ". Every setting it fixes can be overridden by its option (default: default)",
    )
    p.add_argument(
        "--samplers",
        default=UNSET,
        help="comma-separated: plain, plain-ddim (plain with DDIM: the same-scheduler control of "
        "the safe samplers when plain runs PNDM), safe-single, safe-sd-filter, safe-multi, "
        "safe-multi-code, negative, sld-weak, sld-medium, sld-strong, sld-max "
        f"({_d('samplers')})",
    )
    p.add_argument("--seeds", type=positive_int("--seeds"), default=UNSET,
                   help=f"images per prompt ({_d('seeds')})")  # fmt: skip
    p.add_argument("--out", required=True, help="run directory (created; rerun to resume)")
    p.add_argument(
        "--tiny",
        action="store_true",
        default=UNSET,
        help="tiny RANDOM-weight components and scorers (tests, smoke runs; results are not "
        "real); 5 denoising steps unless --steps is given",
    )
    p.add_argument(
        "--mini",
        action="store_true",
        default=UNSET,
        help="the trained mini digits model (safescore.sd.mini): its mini-I2P prompts, samplers "
        "plain,safe-single,negative, scorers digit (harm = the classifier says 3) and clip (the "
        "mini CLIP), CFG 3, 25 steps, unless given",
    )
    p.add_argument("--limit", type=positive_int("--limit"), default=UNSET, help="first N prompts")
    p.add_argument(
        "--categories",
        type=_categories,
        default=UNSET,
        help=f"I2P categories, comma-separated, or 'all' ({_d('categories')})",
    )
    p.add_argument("--hard-only", action="store_true", default=UNSET,
                   help="I2P: only prompts marked hard")  # fmt: skip
    p.add_argument("--deduplicate", action="store_true", default=UNSET,
                   help="drop repeated prompt texts")  # fmt: skip
    p.add_argument("--seed-offset", type=seed_int("--seed-offset"), default=UNSET,
                   help=f"image seed = offset + seed index ({_d('seed_offset')})")  # fmt: skip
    p.add_argument(
        "--data-seeds",
        action=argparse.BooleanOptionalAction,
        default=UNSET,
        help="image seed = the prompt's seed in the data (sd_seed) + index (sld: on)",
    )
    p.add_argument(
        "--noise",
        choices=("per-image", "i2p"),
        default=UNSET,
        help="initial noise: per-image (a generator per image seed) or i2p (the I2P code's: one "
        "generator seeded with the prompt's first seed, batches of 5; sld: i2p) "
        f"({_d('noise')})",
    )
    p.add_argument(
        "--data-guidance",
        action=argparse.BooleanOptionalAction,
        default=UNSET,
        help="use the prompt's guidance scale from the data (sd_guidance_scale; sld: on)",
    )
    p.add_argument("--guidance-scale", type=finite_float("--guidance-scale"), default=UNSET,
                   help=f"classifier-free guidance ({_d('guidance_scale')})")  # fmt: skip
    p.add_argument("--steps", type=positive_int("--steps"), default=UNSET,
                   help=f"denoising steps ({_d('steps')})")  # fmt: skip
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=UNSET,
        help="scheduler of plain and the SLD samplers; the safe samplers use DDIM unless "
        f"dpm++2m ({_d('scheduler')})",
    )
    p.add_argument("--height", type=positive_int("--height"), default=UNSET,
                   help="image height (default: the model's)")  # fmt: skip
    p.add_argument("--width", type=positive_int("--width"), default=UNSET,
                   help="image width (default: the model's)")  # fmt: skip
    p.add_argument("--model", type=nonempty("--model"), default=UNSET,
                   help=f"diffusers model id or folder ({_d('model')})")  # fmt: skip
    p.add_argument("--gamma", type=finite_float("--gamma", low=0), default=UNSET,
                   help="γ of the safe presets (default: the preset's, 75; --mini: 150)")  # fmt: skip
    p.add_argument("--threshold", type=finite_float("--threshold", low=-1, high=1),
                   default=UNSET, help="η of the safe presets, a CLIP cosine in [-1, 1] "
                   "(default: the preset's, 0.23; --mini: 0.5)")  # fmt: skip
    p.add_argument("--negative-gamma", type=finite_float("--negative-gamma", low=0),
                   default=UNSET, help="γ of the negative sampler (default: the preset's; --mini: 300)")  # fmt: skip
    p.add_argument(
        "--scorers",
        default=UNSET,
        help=f"comma-separated from {','.join(SCORER_NAMES)}, or 'none' ({_d('scorers')})",
    )
    p.add_argument("--guidance-clip", type=nonempty("--guidance-clip"), default=UNSET,
                   help=f"CLIP id or folder of the harm density p_h ({_d('guidance_clip')})")  # fmt: skip
    p.add_argument("--clip-preprocessing", choices=("clip", "author"), default=UNSET,
                   help="p_h image mean/std: CLIP's, or ImageNet's as the author's code "
                   f"({_d('clip_preprocessing')})")  # fmt: skip
    p.add_argument("--no-special-care", dest="special_care", action="store_false", default=UNSET,
                   help="sd-filter preset: leave out the safety checker's 3 special-care concepts")  # fmt: skip
    p.add_argument("--scorer-clip", type=nonempty("--scorer-clip"), default=UNSET,
                   help=f"CLIP id or folder of Q16, coherence, aesthetic ({_d('scorer_clip')})")  # fmt: skip
    p.add_argument("--q16-embeddings", default=UNSET,
                   help="Q16 prompt embeddings (.npy/.safetensors)")  # fmt: skip
    p.add_argument("--aesthetic-weights", default=UNSET,
                   help="LAION aesthetic MLP (.pth, loaded weights-only)")  # fmt: skip
    p.add_argument("--nudenet-threshold", type=finite_float("--nudenet-threshold", low=0.2, high=1),
                   default=UNSET, help=f"NudeNet score threshold ({_d('nudenet_threshold')})")  # fmt: skip
    p.add_argument(
        "--device",
        default=None,
        help="torch device (default: Accelerate's, else cuda if available)",
    )
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=1,
                   help="images per pipeline call (one sampler per batch; default: 1)")  # fmt: skip
    p.add_argument("--retry-failed", action="store_true", help="make failed images again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


#: argparse destinations that are EvalConfig fields.
_CONFIG_FIELDS = (
    "prompts samplers seeds limit categories hard_only deduplicate seed_offset data_seeds noise "
    "data_guidance guidance_scale steps scheduler height width tiny mini model gamma threshold "
    "negative_gamma scorers guidance_clip clip_preprocessing special_care scorer_clip "
    "q16_embeddings aesthetic_weights "
    "nudenet_threshold"
).split()


def config_from_args(args) -> EvalConfig:
    """The run's configuration: the protocol's settings, then every option given."""
    given = {name: getattr(args, name) for name in _CONFIG_FIELDS if hasattr(args, name)}
    if "prompts" not in given and not given.get("mini"):
        raise ValueError("--prompts is required (unless --mini: the mini-I2P prompts)")
    return EvalConfig.from_protocol(args.protocol, **given)


def run_evaluate(args) -> int:
    import torch

    from ..eval.runner import run_evaluation

    out = check_out_dir(args.out)
    device = resolve_device(args.device)
    config = config_from_args(args)
    summary = run_evaluation(
        config,
        out,
        device=device,
        dtype=getattr(torch, args.dtype),
        progress=not args.quiet,
        batch_size=args.batch_size,
        retry_failed=args.retry_failed,
    )
    if summary["process"] == 0:
        failed = (
            f", {summary['failed']} FAILED (rows with their error)" if summary["failed"] else ""
        )
        print(
            f"{summary['run_dir']}: {summary.get('rows', '?')} of {summary['items']} images done "
            f"({summary['generated']} new here, {summary['skipped']} resumed{failed}); "
            f"next: safescore report {summary['run_dir']}"
        )
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run directory written by `safescore evaluate`")
    p.add_argument("--no-blur", action="store_true", help="show detected images unblurred in grids")
    p.add_argument(
        "--bootstrap",
        type=positive_int("--bootstrap", high=MAX_BOOTSTRAP),
        default=1000,
        help=f"bootstrap resamples (at most {MAX_BOOTSTRAP:,})",
    )
    p.add_argument(
        "--grid-size", type=positive_int("--grid-size"), default=16, help="images per grid"
    )
    p.add_argument("--no-figures", action="store_true", help="tables only")
    # Quality: FID/KID per sampler against real images (safescore.eval.quality).
    p.add_argument("--reference-images", default=None,
                   help="folder of real images (e.g. COCO val2014) for FID/KID per sampler")  # fmt: skip
    p.add_argument("--inception-weights", default=None,
                   help="local Inception-v3 weights for FID/KID (offline)")  # fmt: skip


def run_report(args) -> int:
    from PIL import UnidentifiedImageError

    from ..eval.report import write_report

    if args.inception_weights is not None and args.reference_images is None:
        raise CLIError(
            "--inception-weights is used for FID/KID only, which need --reference-images FOLDER; "
            "give both, or leave --inception-weights out"
        )
    try:
        paths = write_report(
            args.run_dir,
            blur=not args.no_blur,
            n_bootstrap=args.bootstrap,
            grid_size=args.grid_size,
            figures=not args.no_figures,
            reference_images=args.reference_images,
            inception_weights=args.inception_weights,
        )
    except UnidentifiedImageError as exc:
        raise CLIError(
            f"--reference-images: {exc}; remove that file or give it a real image"
        ) from None
    except ModuleNotFoundError as exc:
        if exc.name is not None:  # a real import failure: a bug or a broken install, keep it
            raise
        raise CLIError(str(exc)) from None  # an optional package's message (FID/KID)
    text = paths["markdown"].read_text(encoding="utf-8")
    print(text.split("\n## Figures")[0].rstrip())
    print(f"wrote {', '.join(str(p) for p in paths.values() if not isinstance(p, list))}")
    _note_if_incomplete(args.run_dir)
    return 0


def _note_if_incomplete(run_dir) -> None:
    """Say so when the run lacks rows its configuration asks for (a run cut short)."""
    import sys
    from pathlib import Path

    from ..eval.runner import expected_keys, read_config, read_rows, row_key

    config = read_config(run_dir)
    config.pop("prompt_fingerprint", None)
    try:
        expected = expected_keys(EvalConfig(**config))
    except (TypeError, ValueError, OSError):  # an old or hand-made config: nothing to compare
        return
    have = {row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in read_rows(Path(run_dir))}
    missing = expected - have
    if missing:
        print(
            f"note: the run is incomplete: {len(missing)} of {len(expected)} images are missing "
            "(rerun the same evaluate command to finish it); the report covers the rest",
            file=sys.stderr,
        )


def register(subparsers) -> None:
    """Add ``evaluate`` and ``report`` to the ``safescore`` command's subparsers."""
    p = subparsers.add_parser(
        "evaluate",
        help="generate and score images for prompts × samplers × seeds (resumable, shardable)",
        description=(
            "Generate images per prompt × seed × sampler, score them (NudeNet, Q16, CLIP "
            "coherence, LAION aesthetic) and append one JSON line per image to "
            "RUN_DIR/results.jsonl as it finishes. Rerun the same command to resume; the folder "
            "is locked while a run writes to it. Shard across GPUs with "
            "`accelerate launch -m safescore evaluate ...`."
        ),
    )
    add_evaluate_arguments(p)
    p.set_defaults(func=run_evaluate)
    p = subparsers.add_parser(
        "report",
        help="tables (Markdown, CSV) and figures from an evaluation run",
        description=(
            "Write RUN_DIR/report.md and report.csv (per sampler: NudeNet per category and any, "
            "Q16 mean and detected, CLIP coherence, aesthetic, the I2P paper's inappropriate "
            "probability and expected maximum inappropriateness; differences against plain SD "
            "with bootstrap 95%% intervals; published reference numbers beside ours), bar "
            "charts and image grids (detected images blurred)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_report_arguments(p)
    p.set_defaults(func=run_report)
