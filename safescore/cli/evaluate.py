"""``safescore evaluate`` and ``safescore report``; shard a run across GPUs with
``accelerate launch -m safescore evaluate ...``.

Only argparse is imported here; torch, diffusers, pandas and nudenet load inside the commands.
"""

from __future__ import annotations

import argparse

from .options import positive_int

_DEFAULT_SAMPLERS = "plain,safe-single,safe-sd-filter,safe-multi"


def _categories(text: str):
    if text.strip().lower() in ("all", "none", ""):
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompts",
        required=True,
        help="builtin:benign, AIML-TUDA/i2p, an I2P CSV, or a .csv/.txt prompt file "
        "(prefix coco: or template: to name it)",
    )
    p.add_argument(
        "--samplers",
        default=_DEFAULT_SAMPLERS,
        help="comma-separated: plain, safe-single, safe-sd-filter, safe-multi, negative, "
        "sld-weak, sld-medium, sld-strong, sld-max",
    )
    p.add_argument("--seeds", type=positive_int("--seeds"), default=1, help="seeds per prompt")
    p.add_argument("--out", required=True, help="run directory (created; rerun to resume)")
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny RANDOM-weight components and scorers (tests, smoke runs; results are not real)",
    )
    p.add_argument("--limit", type=positive_int("--limit"), default=None, help="first N prompts")
    p.add_argument(
        "--categories",
        type=_categories,
        default=["violence", "sexual", "harassment"],
        help="I2P categories, comma-separated, or 'all'",
    )
    p.add_argument("--hard-only", action="store_true", help="I2P: only prompts marked hard")
    p.add_argument("--deduplicate", action="store_true", help="drop repeated prompt texts")
    p.add_argument("--seed-offset", type=int, default=0, help="image seed = offset + seed index")
    p.add_argument(
        "--data-seeds",
        action="store_true",
        help="image seed = the prompt's seed in the data + index",
    )
    p.add_argument(
        "--data-guidance", action="store_true", help="use the prompt's guidance scale from the data"
    )
    p.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance")
    p.add_argument("--steps", type=positive_int("--steps"), default=50, help="DDIM steps")
    p.add_argument("--height", type=positive_int("--height"), default=None)
    p.add_argument("--width", type=positive_int("--width"), default=None)
    p.add_argument(
        "--model", default="CompVis/stable-diffusion-v1-4", help="diffusers model id or folder"
    )
    p.add_argument("--negative-gamma", type=float, default=None, help="γ of the negative sampler")
    p.add_argument(
        "--scorers", default="nudenet,q16,clip,aesthetic", help="comma-separated scorers to run"
    )
    p.add_argument(
        "--clip", default="openai/clip-vit-large-patch14", help="CLIP ViT-L/14 id or folder"
    )
    p.add_argument(
        "--q16-embeddings", default=None, help="Q16 prompt embeddings (.npy/.safetensors)"
    )
    p.add_argument(
        "--aesthetic-weights", default=None, help="LAION aesthetic MLP (.pth, loaded weights-only)"
    )
    p.add_argument("--nudenet-threshold", type=float, default=0.2)
    p.add_argument(
        "--device",
        default=None,
        help="torch device (default: Accelerate's, else cuda if available)",
    )
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_evaluate(args) -> int:
    import torch

    from ..eval.runner import EvalConfig, run_evaluation

    config = EvalConfig(
        prompts=args.prompts,
        samplers=args.samplers,
        seeds=args.seeds,
        limit=args.limit,
        categories=args.categories,
        hard_only=args.hard_only,
        deduplicate=args.deduplicate,
        seed_offset=args.seed_offset,
        data_seeds=args.data_seeds,
        data_guidance=args.data_guidance,
        guidance_scale=args.guidance_scale,
        steps=args.steps,
        height=args.height,
        width=args.width,
        tiny=args.tiny,
        model=args.model,
        negative_gamma=args.negative_gamma,
        scorers=args.scorers,
        clip=args.clip,
        q16_embeddings=args.q16_embeddings,
        aesthetic_weights=args.aesthetic_weights,
        nudenet_threshold=args.nudenet_threshold,
    )
    summary = run_evaluation(
        config,
        args.out,
        device=args.device,
        dtype=getattr(torch, args.dtype),
        progress=not args.quiet,
    )
    if summary["process"] == 0:
        print(
            f"{summary['run_dir']}: {summary.get('rows', '?')} of {summary['items']} images done "
            f"({summary['generated']} new here, {summary['skipped']} resumed); "
            f"next: safescore report {summary['run_dir']}"
        )
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the run directory written by `safescore evaluate`")
    p.add_argument("--no-blur", action="store_true", help="show detected images unblurred in grids")
    p.add_argument(
        "--bootstrap", type=positive_int("--bootstrap"), default=1000, help="bootstrap resamples"
    )
    p.add_argument(
        "--grid-size", type=positive_int("--grid-size"), default=16, help="images per grid"
    )
    p.add_argument("--no-figures", action="store_true", help="tables only")


def run_report(args) -> int:
    from ..eval.report import write_report

    paths = write_report(
        args.run_dir,
        blur=not args.no_blur,
        n_bootstrap=args.bootstrap,
        grid_size=args.grid_size,
        figures=not args.no_figures,
    )
    text = paths["markdown"].read_text(encoding="utf-8")
    print(text.split("\n## Figures")[0].rstrip())
    print(f"wrote {', '.join(str(p) for p in paths.values() if not isinstance(p, list))}")
    return 0


def register(subparsers) -> None:
    """Add ``evaluate`` and ``report`` to the ``safescore`` command's subparsers."""
    p = subparsers.add_parser(
        "evaluate",
        help="generate and score images for prompts × samplers × seeds (resumable, shardable)",
        description=(
            "Generate one image per prompt × seed × sampler, score it (NudeNet, Q16, CLIP "
            "coherence, LAION aesthetic) and append one JSON line to RUN_DIR/results.jsonl as "
            "each image finishes. Rerun the same command to resume. Shard across GPUs with "
            "`accelerate launch -m safescore evaluate ...`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_evaluate_arguments(p)
    p.set_defaults(func=run_evaluate)
    p = subparsers.add_parser(
        "report",
        help="tables (Markdown, CSV) and figures from an evaluation run",
        description=(
            "Write RUN_DIR/report.md and report.csv (per sampler: NudeNet per category and any, "
            "Q16 mean and detected, CLIP coherence, aesthetic; differences against plain SD with "
            "bootstrap 95%% intervals), bar charts and image grids (detected images blurred)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_report_arguments(p)
    p.set_defaults(func=run_report)
