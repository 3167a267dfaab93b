"""Image quality against real images: FID, KID (torchmetrics) and CLIP score.

* **FID / KID** use torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance``, the
  field's standard implementation. With the default Inception-v3 features (2048-d, torch-fidelity's
  ``pt_inception-2015-12-05`` network) the weights come from a local file,
  ``inception_weights=PATH`` (``safescore report --inception-weights``); nothing is downloaded,
  and without it a one-line error names the option. Any ``torch.nn.Module`` mapping uint8 images (B, 3, H, W) to features
  (B, D) can stand in (``feature=``), e.g. `RandomConvFeatures` in tests; numbers from
  different feature extractors are not comparable with each other or with published FIDs.
* **CLIP score** (Hessel et al. 2021, as torchmetrics' ``CLIPScore``): 100 × max(cos(image,
  prompt), 0), averaged over images. It is computed from the ``clip_coherence`` the scorers
  already stored per image (the scorer CLIP, ViT-L/14 by default), so it needs no second pass.

Images are read as RGB uint8 and resized (bicubic) to ``size`` × ``size`` so that sets of
different resolutions can be compared; Inception resizes to 299 itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class RandomConvFeatures(torch.nn.Module):
    """A fixed random conv net (seeded), uint8 images (B, 3, H, W) -> features (B, dim).

    A stand-in for Inception where no weights are available (tests, offline smoke runs): FID on
    it still measures a distance between the two feature distributions, 0 for identical sets.
    """

    def __init__(self, dim: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(16, dim, 3, stride=2, padding=1)
        for layer in (self.conv1, self.conv2):
            fan_in = layer.weight[0].numel()
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / fan_in**0.5)
                layer.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 127.5 - 1
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return x.mean(dim=(-2, -1))


def load_image_folder(path, size: int = 299, *, limit: int | None = None) -> torch.Tensor:
    """Every image under ``path`` (recursively, sorted) as uint8 (N, 3, size, size)."""
    from PIL import Image

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"reference images: {path} is not a folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ValueError(f"reference images: no {'/'.join(IMAGE_SUFFIXES)} files under {path}")
    return images_to_uint8([Image.open(f) for f in files], size)


def images_to_uint8(images, size: int) -> torch.Tensor:
    """PIL images (or paths) -> uint8 tensor (N, 3, size, size), bicubic resize."""
    from PIL import Image

    out = []
    for im in images:
        if not isinstance(im, Image.Image):
            im = Image.open(im)
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(out)


def _inception(inception_weights):
    """torchmetrics' ``feature`` argument for Inception-v3 (2048-d) with local weights."""
    if inception_weights is None:
        raise FileNotFoundError(
            "FID/KID need a local Inception-v3 weights file (nothing is downloaded): pass "
            "--inception-weights PATH (torch-fidelity's pt_inception-2015-12-05-6726825d.pth)"
        )
    path = Path(inception_weights)
    if not path.is_file():
        raise FileNotFoundError(f"--inception-weights {path}: no such file")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError(
            "FID/KID with Inception need torch-fidelity (and torchvision matching your torch): "
            "pip install torch-fidelity"
        ) from None
    return dict(feature=2048, feature_extractor_weights_path=str(path))


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    feature: torch.nn.Module | None = None,
    inception_weights=None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    batch_size: int = 64,
    device=None,
) -> dict:
    """FID and KID (mean, std over subsets) between uint8 image sets (N, 3, H, W).

    ``feature``: a module uint8 images -> (B, D) features (default: Inception-v3 from
    ``inception_weights``). KID's subset size is ``min(kid_subset_size, N_real, N_fake)``.
    Returns ``dict(fid, kid_mean, kid_std, n_real, n_fake, features)``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"{name} must be a uint8 tensor (N, 3, H, W)")
        if x.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 images for FID/KID, got {x.shape[0]}")
    if feature is None:
        kwargs = _inception(inception_weights)
        label = "Inception-v3 (2048)"
    else:
        kwargs = dict(feature=feature)
        label = type(feature).__name__
    subset = min(kid_subset_size, real.shape[0], fake.shape[0])
    metrics = [
        FrechetInceptionDistance(**kwargs),
        KernelInceptionDistance(subsets=kid_subsets, subset_size=subset, **kwargs),
    ]
    if device is not None:
        metrics = [m.to(device) for m in metrics]
    for m in metrics:
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, images.shape[0], batch_size):
                m.update(images[i : i + batch_size].to(m.device), real=is_real)
    fid = float(metrics[0].compute())
    kid_mean, kid_std = (float(v) for v in metrics[1].compute())
    return dict(
        fid=fid,
        kid_mean=kid_mean,
        kid_std=kid_std,
        n_real=int(real.shape[0]),
        n_fake=int(fake.shape[0]),
        kid_subset_size=subset,
        features=label,
    )


def clip_score(coherences) -> float:
    """CLIP score 100 × mean(max(cos, 0)) of per-image image–prompt cosines (NaN-free)."""
    c = np.asarray([v for v in coherences if v is not None], dtype=np.float64)
    c = c[np.isfinite(c)]
    return float(100 * np.maximum(c, 0).mean()) if c.size else float("nan")


def prompt_set(prompt_id: str) -> str:
    """The prompt set of a row: the prefix of its ``prompt_id`` (``coco``, ``template``, ``i2p``)."""
    return str(prompt_id).rsplit("-", 1)[0]


def quality_lines(
    run_dir,
    rows,
    samplers,
    *,
    reference_images=None,
    inception_weights=None,
    feature=None,
    size: int = 299,
) -> list[str]:
    """Markdown lines for ``report.md``: CLIP score per sampler (and per prompt set when the run
    has several, e.g. the thesis' template vs COCO prompts), and FID / KID per sampler against
    ``reference_images`` (a folder) when given."""
    run_dir = Path(run_dir)
    lines = []
    have_clip = any(r.get("clip_coherence") is not None for r in rows)
    if have_clip:
        sets = sorted({prompt_set(r["prompt_id"]) for r in rows})
        lines += [
            "## CLIP score (100 × max(cos(image, prompt), 0), scorer CLIP)",
            "",
            "| sampler | " + " | ".join(f"{s} (n)" for s in ["all", *sets]) + " |",
            "|---|" + "---|" * (len(sets) + 1),
        ]
        for s in samplers:
            cells = []
            for group in ["all", *sets]:
                vals = [
                    r.get("clip_coherence")
                    for r in rows
                    if r["sampler"] == s and (group == "all" or prompt_set(r["prompt_id"]) == group)
                ]
                vals = [v for v in vals if v is not None]
                cells.append(f"{clip_score(vals):.2f} ({len(vals)})" if vals else "n/a")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
        if len(sets) > 1:
            lines += [
                f"Prompt sets in this run: {', '.join(sets)} (from the prompt ids); the thesis "
                "compares quality on the template prompts against COCO.",
                "",
            ]
    if reference_images is None:
        return lines
    real = load_image_folder(reference_images, size)
    lines += [
        f"## FID / KID against {Path(reference_images).name} ({real.shape[0]} reference images)",
        "",
    ]
    table = ["| sampler | images | FID | KID × 1000 (mean ± std) |", "|---|---|---|---|"]
    label = None
    for s in samplers:
        paths = [
            run_dir / r["image_path"] for r in rows if r["sampler"] == s and r.get("image_path")
        ]
        paths = [p for p in paths if p.is_file()]
        if len(paths) < 2:
            table.append(f"| {s} | {len(paths)} | n/a | n/a |")
            continue
        fake = images_to_uint8(paths, size)
        res = fid_kid(real, fake, feature=feature, inception_weights=inception_weights)
        label = res["features"]
        table.append(
            f"| {s} | {res['n_fake']} | {res['fid']:.2f} | "
            f"{1000 * res['kid_mean']:.2f} ± {1000 * res['kid_std']:.2f} |"
        )
    lines += [f"Features: {label or 'n/a'}; images resized to {size}².", "", *table, ""]
    return lines


__all__ = [
    "RandomConvFeatures",
    "fid_kid",
    "clip_score",
    "load_image_folder",
    "images_to_uint8",
    "quality_lines",
    "prompt_set",
]
