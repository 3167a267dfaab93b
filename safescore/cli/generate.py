"""``safescore generate``: Stable Diffusion with safe sampling, from the command line.

Writes ``safe_<i>.png`` (and with ``--compare`` ``plain_<i>.png`` and ``compare.png``, plain above
safe, same seed) and ``generation.json`` with the settings and per-step harm / corrections.
A non-empty ``--out`` is refused unless ``--overwrite`` (which first removes the files this
command writes: ``safe_*.png``, ``plain_*.png``, ``compare.png``, ``generation.json``).
``--tiny`` uses random-weight components built offline (a RANDOM WEIGHTS banner is printed and
recorded); ``--mini`` the trained mini digits model (`safescore.sd.mini`: its CLIP p_h, γ 150,
η 0.5, CFG 3, 25 steps unless given; the digit classifier's label of each image is recorded). Heavy packages are imported inside `run_generate` only.
"""

from __future__ import annotations

import argparse
import json
import os

from ..eval.protocols import DEFAULT_GUIDANCE_CLIP, DEFAULT_MODEL
from ..eval.run_config import MINI_IMAGE_SIZE
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

#: The files ``generate`` writes (what ``--overwrite`` removes first).
OUTPUT_PATTERNS = ("safe_*.png", "plain_*.png", "compare.png", "generation.json")


def register(subparsers) -> None:
    """Add the ``generate`` subcommand to the ``safescore`` parser."""
    p = subparsers.add_parser(
        "generate",
        help="Stable Diffusion with safe sampling (x̂0-space unguidance with CDTC)",
        description=(
            "Generate images with Stable Diffusion (DDIM) and the thesis' safe sampler: at each "
            "step the predicted clean latent x̂0 is decoded, scored by a CLIP harm density p_h, and "
            "moved down ∇ log p_h when p_h passes the threshold. Writes PNGs and generation.json "
            "(per-step harm and corrections) to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeat for several)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt for every image")
    p.add_argument(
        "--preset",
        default="single",
        choices=("single", "multi", "multi-code", "sd-filter"),
        help="thesis variant: single, multi (slides), multi-code (the author's code: sum of log "
        "top-1), sd-filter (our interpretation: the safety checker's concepts)",
    )
    p.add_argument(
        "--concept", action="append", default=None,
        help="harm concept for the CLIP density (repeat for several; overrides the preset's)",
    )  # fmt: skip
    p.add_argument(
        "--reduction", default=None,
        choices=("mean", "topk", "max", "sum_log_topk", "matching"),
        help="multi-concept reduction (default: the preset's, mean)",
    )  # fmt: skip
    p.add_argument("--k", type=positive_int("--k"), default=None,
                   help="K for --reduction topk / sum_log_topk")  # fmt: skip
    p.add_argument("--clip-preprocessing", choices=("clip", "author"), default="clip",
                   help="p_h image mean/std: CLIP's, or ImageNet's as the author's code")  # fmt: skip
    p.add_argument("--gamma", type=finite_float("--gamma", low=0), default=None,
                   help="step size γ (default: preset, 75)")  # fmt: skip
    p.add_argument("--threshold", type=finite_float("--threshold"), default=None,
                   help="CDTC threshold η, in the density's range (default 0.23)")  # fmt: skip
    p.add_argument("--steps", type=positive_int("--steps"), default=None,
                   help="DDIM steps (default: 50; --mini: 25)")  # fmt: skip
    p.add_argument("--guidance-scale", type=finite_float("--guidance-scale"), default=None,
                   help="classifier-free guidance w (default: 7.5; --mini: 3)")  # fmt: skip
    p.add_argument("--seed", type=seed_int("--seed"), default=0,
                   help="seed of the initial latents (image i: seed + i)")  # fmt: skip
    p.add_argument("--num-images", type=positive_int("--num-images"), default=1,
                   help="images per prompt")  # fmt: skip
    p.add_argument("--height", type=positive_int("--height"), default=None,
                   help="image height (default: the model's)")  # fmt: skip
    p.add_argument("--width", type=positive_int("--width"), default=None,
                   help="image width (default: the model's)")  # fmt: skip
    p.add_argument("--model", type=nonempty("--model"), default=None,
                   help=f"Stable Diffusion hub id or local folder (default {DEFAULT_MODEL})")  # fmt: skip
    p.add_argument("--clip", type=nonempty("--clip"), default=None,
                   help=f"CLIP hub id or local folder for p_h (default {DEFAULT_GUIDANCE_CLIP})")  # fmt: skip
    p.add_argument("--tiny", action="store_true", help="tiny RANDOM-weight components (offline)")
    p.add_argument(
        "--mini",
        action="store_true",
        help="the trained mini digits model (safescore.sd.mini; offline): prompts like "
        "'a handwritten three', harm concept 'a handwritten three', preset single only",
    )
    p.add_argument("--compare", action="store_true", help="also sample plain SD with the same seed")
    p.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    p.add_argument("--out", required=True, help="output directory (created if missing; empty)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out, replacing the files generate writes",
    )
    p.set_defaults(func=run_generate)


def _load(args, device, dtype):
    """(pipe, clip_model, clip_tokenizer_or_processor, safety_checker) for the arguments."""
    from ..sd.hub import load_pretrained
    from ..sd.pipeline import SafeStableDiffusionPipeline
    from ..sd.tiny import tiny_clip, tiny_pipeline, tiny_safety_checker

    if args.mini:
        from ..sd import mini

        pipe = mini.load_pipeline(dtype=dtype)
        clip_model = clip_tok = checker = None  # the guidance comes from mini.safe_guidance
    elif args.tiny:
        pipe = tiny_pipeline(args.seed)
        clip_model, clip_tok = tiny_clip(args.seed)
        checker = tiny_safety_checker(args.seed) if args.preset == "sd-filter" else None
    else:
        from transformers import CLIPModel, CLIPProcessor

        pipe = SafeStableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype)
        clip_model = clip_tok = checker = None
        if args.preset == "sd-filter":
            from diffusers.pipelines.stable_diffusion.safety_checker import (
                StableDiffusionSafetyChecker,
            )

            checker = load_pretrained(
                StableDiffusionSafetyChecker.from_pretrained, args.model,
                subfolder="safety_checker", torch_dtype=dtype,
            )  # fmt: skip
        else:
            clip_model = load_pretrained(CLIPModel.from_pretrained, args.clip, dtype=dtype)
            clip_tok = load_pretrained(CLIPProcessor.from_pretrained, args.clip)
    pipe = pipe.to(device)
    if clip_model is not None:
        clip_model = clip_model.to(device)
    if checker is not None:
        checker = checker.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, clip_model, clip_tok, checker


def run_generate(args) -> int:
    import glob

    import torch

    from ..eval.samplers import decoder_memory_estimate, device_memory
    from ..sd.presets import make_guidance
    from ..sd.tiny import RANDOM_WEIGHTS_BANNER

    if args.tiny and args.mini:
        raise ValueError("--tiny and --mini exclude each other: choose one")
    if args.mini and args.preset != "single":
        raise ValueError(f"--mini: preset {args.preset!r} has no mini version; use single")
    if args.mini and (args.reduction is not None or args.k is not None):
        raise ValueError("--mini: --reduction and --k are not available (one concept, cosine)")
    refuse_model_options(args)
    if args.mini:
        for option, size in (("--height", args.height), ("--width", args.width)):
            if size is not None and size != MINI_IMAGE_SIZE:
                raise CLIError(
                    f"{option} {size}: the mini model makes {MINI_IMAGE_SIZE}×{MINI_IMAGE_SIZE} "
                    f"images only (it was trained at that size); leave {option} out"
                )
    args.model = args.model or DEFAULT_MODEL
    args.clip = args.clip or DEFAULT_GUIDANCE_CLIP
    if args.steps is None:
        args.steps = 25 if args.mini else 50
    if args.guidance_scale is None:
        args.guidance_scale = 3.0 if args.mini else 7.5
    if args.concept is not None and args.preset == "sd-filter":
        raise ValueError(
            "--concept cannot be combined with --preset sd-filter (it uses the filter's concepts)"
        )
    out = check_out_dir(args.out, must_be_empty=not args.overwrite)
    device_name = resolve_device(args.device)
    device = torch.device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = args.tiny or args.mini
    dtype = torch.float16 if device.type == "cuda" and not small else torch.float32
    if args.tiny:
        print(f"*** {RANDOM_WEIGHTS_BANNER} ***")
    pipe, clip_model, clip_tok, checker = _load(args, device, dtype)
    height = args.height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = args.width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    n_images = len(args.prompt) * args.num_images
    need = decoder_memory_estimate(pipe.vae, height, width, n_images, dtype)
    have = device_memory(device)
    if have is not None and need > have:
        raise ValueError(
            f"--height {height} --width {width} for {n_images} image(s) needs about "
            f"{need / 2**30:.3g} GiB for the VAE decoder alone (estimate), more than the "
            f"{have / 2**30:.1f} GiB of memory of {device}; lower the size or the number of images"
        )
    if args.mini:
        from ..sd import mini

        guidance = mini.safe_guidance(
            tuple(args.concept) if args.concept else (mini.HARMFUL_CONCEPT,),
            gamma=args.gamma,
            threshold=args.threshold,
            device=device,
        )
    else:
        guidance = make_guidance(
            args.preset,
            clip_model=clip_model,
            tokenizer=clip_tok,
            vae=pipe.vae,
            safety_checker=checker,
            gamma=args.gamma,
            threshold=args.threshold,
            concepts=args.concept,
            reduction=args.reduction,
            k=args.k,
            preprocessing=args.clip_preprocessing,
        )
    # (a threshold outside the density's prob_range was refused by SafeGuidance itself)
    # the image density (under the VAE pull-back for the presets; mini's is the image density)
    density = getattr(guidance.density, "density", guidance.density)
    common = dict(
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        negative_prompt=None
        if args.negative_prompt is None
        else [args.negative_prompt] * len(args.prompt),
        height=args.height,
        width=args.width,
        num_images_per_prompt=args.num_images,
        output_type="pil",
    )

    def generators():
        return [torch.Generator("cpu").manual_seed(args.seed + i) for i in range(n_images)]

    safe = pipe(args.prompt, guidance=guidance, generator=generators(), record=True, **common)
    out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:
        for pattern in OUTPUT_PATTERNS:
            for stale in glob.glob(os.path.join(glob.escape(str(out)), pattern)):
                os.remove(stale)
    files = {"safe": [], "plain": []}
    for i, image in enumerate(safe.images):
        path = os.path.join(args.out, f"safe_{i:03d}.png")
        image.save(path)
        files["safe"].append(os.path.basename(path))
    if args.compare:
        plain = pipe(args.prompt, guidance=None, generator=generators(), **common)
        for i, image in enumerate(plain.images):
            path = os.path.join(args.out, f"plain_{i:03d}.png")
            image.save(path)
            files["plain"].append(os.path.basename(path))
        _grid(plain.images, safe.images).save(os.path.join(args.out, "compare.png"))
        files["compare"] = "compare.png"
    record = {
        "random_weights": bool(safe.random_weights),
        "note": RANDOM_WEIGHTS_BANNER if safe.random_weights else None,
        "model": "tiny" if args.tiny else ("mini" if args.mini else args.model),
        "clip": "tiny"
        if args.tiny
        else ("mini" if args.mini else (None if args.preset == "sd-filter" else args.clip)),
        "prompts": args.prompt,
        "negative_prompt": args.negative_prompt,
        "preset": args.preset,
        "density": repr(density),
        # a number, or a schedule's repr (the mini model's γ_t = γ·√ᾱ_t)
        "gamma": guidance.gamma
        if isinstance(guidance.gamma, (int, float))
        else repr(guidance.gamma),
        "threshold": guidance.threshold,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "seeds": [args.seed + i for i in range(n_images)],
        "device": str(device),
        "dtype": str(dtype),
        "timesteps": safe.timesteps.tolist(),
        "harm": [[_num(v) for v in row] for row in safe.harm.T.tolist()],
        "corrected": safe.corrected.T.tolist(),
        "corrected_steps": safe.corrected.sum(dim=0).tolist(),
        "files": files,
    }
    if args.mini:
        import numpy as np

        from ..sd import mini

        classifier = mini.digit_classifier()
        arrays = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in safe.images])
        record["digits"] = {"safe": classifier.predict(arrays).tolist()}
        if args.compare:
            arrays = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in plain.images])
            record["digits"]["plain"] = classifier.predict(arrays).tolist()
    with open(os.path.join(args.out, "generation.json"), "w") as f:
        json.dump(record, f, indent=1)
    for i in range(n_images):
        digit = ""
        if "digits" in record:  # --mini: what the digit classifier reads (plain -> safe)
            plain = record["digits"].get("plain")
            digit = f", digit {plain[i]} -> {record['digits']['safe'][i]}" if plain else ""
            digit = digit or f", digit {record['digits']['safe'][i]}"
        print(
            f"image {i}: corrected at {record['corrected_steps'][i]}/{args.steps} steps, "
            f"max p_h {max((v for v in record['harm'][i] if v is not None), default=float('nan')):.3f}"
            f"{digit}"
        )
    print(
        f"wrote {len(files['safe']) + len(files['plain'])} images and generation.json to {args.out}"
    )
    return 0


def _num(v: float):
    return None if v != v else round(float(v), 6)  # NaN (not evaluated) -> null


def _grid(top, bottom, min_side: int = 96):
    """Plain images on the first row, safe ones on the second (PIL); small images (the mini
    model's 16²) are enlarged by an integer factor, pixels kept sharp, so the grid is readable."""
    from PIL import Image

    w, h = top[0].size
    scale = max(1, -(-min_side // min(w, h)))
    W, H = w * scale, h * scale
    grid = Image.new("RGB", (W * len(top), 2 * H), "white")
    for i, (a, b) in enumerate(zip(top, bottom)):
        grid.paste(a.resize((W, H), Image.NEAREST), (i * W, 0))
        grid.paste(b.resize((W, H), Image.NEAREST), (i * W, H))
    return grid
