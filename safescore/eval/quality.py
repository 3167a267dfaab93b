"""Image quality against real images: FID, KID (torchmetrics) and CLIP score.

* **FID / KID** use torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` on
  features computed ONCE per image set. The standard features are torch-fidelity's
  Inception-v3 (``pt_inception-2015-12-05``, 2048-d, through torchmetrics'
  ``NoTrainInceptionV3``) from a local weights file, ``inception_weights=PATH``
  (``safescore report --inception-weights``); nothing is downloaded, the file is read with
  ``torch.load(weights_only=True)``, and without it a one-line error names the option.
  Images go in at their OWN size and the network's only resize is the standard one: the
  TensorFlow-1-compatible bilinear resize to 299 × 299 of the original FID code (torchmetrics'
  ``antialias=False``; its default ``antialias=True`` is a different, antialiased resize and
  gives FIDs that are not comparable with published ones). A non-square image is stretched to
  299² by that resize, as in the original code; nothing is cropped or resized before it.
  Any ``torch.nn.Module`` mapping uint8 images (B, 3, H, W) to features (B, D) can stand in
  (``feature=``), e.g. `RandomConvFeatures` in tests; numbers from different feature
  extractors are not comparable with each other or with published FIDs.
* **CLIP score**: torchmetrics' ``CLIPScore``, max(100 × mean(cos(image, prompt)), 0) over the
  images (the clamp is applied to the mean, not to each image: for cosines [0.3, -0.1] it is
  10, where a per-image clamp would give 15). It is computed from the ``clip_coherence`` the
  scorers already stored per image (the scorer CLIP, ViT-L/14 by default), so it needs no
  second pass.
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


def load_image_folder(path, size: int | None = None, *, limit: int | None = None):
    """Every image under ``path`` (recursively, sorted) as uint8 RGB: a list of (3, H, W) at
    each image's own size (``size=None``, what FID/KID take), or one tensor (N, 3, size, size)
    resized bicubically (``size``)."""
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


def images_to_uint8(images, size: int | None = None):
    """PIL images (or paths) -> uint8 RGB: a list of (3, H, W) at their own size (``size=None``)
    or a tensor (N, 3, size, size) after a bicubic resize."""
    from PIL import Image

    out = []
    for im in images:
        if not isinstance(im, Image.Image):
            im = Image.open(im)
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return out if size is None else torch.stack(out)


def inception_features(inception_weights) -> torch.nn.Module:
    """torch-fidelity's FID Inception-v3 (2048-d pool features; through torchmetrics'
    ``NoTrainInceptionV3``) with the weights of the local file ``inception_weights``, read
    weights-only, and the standard TF1-compatible resize (``antialias=False``).
    uint8 images (B, 3, H, W) -> features (B, 2048)."""
    import tempfile

    if inception_weights is None:
        raise FileNotFoundError(
            "FID/KID need a local Inception-v3 weights file (nothing is downloaded): pass "
            "--inception-weights PATH (torch-fidelity's weights-inception-2015-12-05-6726825d.pth)"
        )
    path = Path(inception_weights)
    if not path.is_file():
        raise FileNotFoundError(f"--inception-weights {path}: no such file")
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise ModuleNotFoundError(
            "FID/KID with Inception need torch-fidelity and a torchvision built for your torch "
            f"(import failed: {type(exc).__name__}: {exc}); see docs/evaluation.md"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"--inception-weights {path}: not a weights-only PyTorch state dict ({exc})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--inception-weights {path}: not a state dict of tensors")
    # torch-fidelity reads the file itself (0.4.0: weights_only=False): hand it a copy written
    # here from the plain tensors just checked, never the outside file.
    with tempfile.TemporaryDirectory() as tmp:
        checked = Path(tmp) / "inception.pt"
        torch.save(state, checked)
        try:
            net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=["2048"],
                feature_extractor_weights_path=str(checked),
                antialias=False,
            )
        except RuntimeError as exc:  # missing / unexpected keys, wrong shapes
            raise ValueError(
                f"--inception-weights {path}: not torch-fidelity's Inception-v3 weights "
                f"({str(exc).splitlines()[0]})"
            ) from None
    net.safescore_label = "Inception-v3 (2048; torch-fidelity weights, TF1 bilinear resize to 299²)"
    return net


class _Precomputed(torch.nn.Module):
    """The 'extractor' of features computed already: (B, D) -> (B, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _as_images(name: str, x) -> list[torch.Tensor]:
    """A uint8 tensor (N, 3, H, W) or a list of uint8 (3, H, W) -> list of (3, H, W)."""
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{name} must be a uint8 tensor (N, 3, H, W), got {x.dtype} {tuple(x.shape)}"
            )
        images = list(x)
    elif isinstance(x, (list, tuple)) and all(
        isinstance(i, torch.Tensor) and i.dtype == torch.uint8 and i.ndim == 3 and i.shape[0] == 3
        for i in x
    ):
        images = list(x)
    else:
        raise ValueError(f"{name} must be a uint8 tensor (N, 3, H, W) or a list of uint8 (3, H, W)")
    if len(images) < 2:
        raise ValueError(f"{name} needs at least 2 images for FID/KID, got {len(images)}")
    return images


@torch.no_grad()
def extract_features(feature: torch.nn.Module, images, *, batch_size: int = 64, device=None):
    """Features (N, D) float64 of uint8 images (a list of (3, H, W) of any sizes, batched by
    size, order kept)."""
    device = torch.device(device or "cpu")
    by_size: dict = {}
    for i, im in enumerate(images):
        by_size.setdefault(tuple(im.shape), []).append(i)
    out: list = [None] * len(images)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = torch.stack([images[i] for i in chunk]).to(device)
            feats = feature(batch).reshape(len(chunk), -1).double().cpu()
            for i, f in zip(chunk, feats):
                out[i] = f
    return torch.stack(out)


def fid_kid(
    real,
    fake,
    *,
    feature: torch.nn.Module | None = None,
    inception_weights=None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    batch_size: int = 64,
    device=None,
) -> dict:
    """FID and KID (mean, std over subsets) between uint8 image sets: tensors (N, 3, H, W) or
    lists of (3, H, W) of any sizes (each image enters the feature network at its own size).

    ``feature``: a module uint8 images -> (B, D) features (default: `inception_features` of
    ``inception_weights``). Features are computed once per set. KID's subset size is
    ``min(kid_subset_size, N_real, N_fake)``. Returns ``dict(fid, kid_mean, kid_std, n_real,
    n_fake, kid_subset_size, features)``.
    """
    real, fake = _as_images("real", real), _as_images("fake", fake)
    if feature is None:
        feature = inception_features(inception_weights)
    if device is not None:
        feature = feature.to(device)
    real_features, fake_features = (
        extract_features(feature, x, batch_size=batch_size, device=device) for x in (real, fake)
    )
    return dict(
        fid_kid_from_features(
            real_features, fake_features, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets
        ),
        features=feature_label(feature),
    )


def feature_label(feature: torch.nn.Module) -> str:
    """How a feature extractor is named in reports."""
    return getattr(feature, "safescore_label", type(feature).__name__)


def fid_kid_from_features(
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    *,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
) -> dict:
    """FID and KID (torchmetrics) of features (N_real, D) and (N_fake, D) computed already."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    dim = real_features.shape[1]
    n_real, n_fake = real_features.shape[0], fake_features.shape[0]
    subset = min(kid_subset_size, n_real, n_fake)
    fid_metric = FrechetInceptionDistance(feature=_Precomputed(dim))
    kid_metric = KernelInceptionDistance(
        feature=_Precomputed(dim), subsets=kid_subsets, subset_size=subset
    )
    for metric in (fid_metric, kid_metric):
        metric.update(real_features, real=True)
        metric.update(fake_features, real=False)
    fid = float(fid_metric.compute())
    kid_mean, kid_std = (float(v) for v in kid_metric.compute())
    return dict(
        fid=fid,
        kid_mean=kid_mean,
        kid_std=kid_std,
        n_real=int(n_real),
        n_fake=int(n_fake),
        kid_subset_size=subset,
    )


def clip_score(coherences) -> float:
    """torchmetrics' CLIP score of per-image image–prompt cosines: max(100 × mean(cos), 0)
    (None and non-finite values left out; NaN when none is left)."""
    c = np.asarray([v for v in coherences if v is not None], dtype=np.float64)
    c = c[np.isfinite(c)]
    return float(max(100 * c.mean(), 0.0)) if c.size else float("nan")


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
    size: int | None = None,
) -> list[str]:
    """Markdown lines for ``report.md``: CLIP score per sampler (and per prompt set when the run
    has several, e.g. the thesis' template vs COCO prompts), and FID / KID per sampler against
    ``reference_images`` (a folder) when given. ``size``: None (standard: every image at its
    own size into the feature network) or a bicubic pre-resize to size² (stand-in features)."""
    run_dir = Path(run_dir)
    lines = []
    have_clip = any(r.get("clip_coherence") is not None for r in rows)
    if have_clip:
        sets = sorted({prompt_set(r["prompt_id"]) for r in rows})
        lines += [
            "## CLIP score (torchmetrics': max(100 × mean cos(image, prompt), 0), scorer CLIP)",
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
        f"## FID / KID against {Path(reference_images).name} ({len(real)} reference images)",
        "",
    ]
    if feature is None:
        feature = inception_features(inception_weights)
    real_features = extract_features(feature, _as_images("reference images", real))
    table = ["| sampler | images | FID | KID × 1000 (mean ± std) |", "|---|---|---|---|"]
    for s in samplers:
        paths = [
            run_dir / r["image_path"] for r in rows if r["sampler"] == s and r.get("image_path")
        ]
        paths = [p for p in paths if p.is_file()]
        if len(paths) < 2:
            table.append(f"| {s} | {len(paths)} | n/a | n/a |")
            continue
        fake = _as_images(s, images_to_uint8(paths, size))
        res = fid_kid_from_features(real_features, extract_features(feature, fake))
        table.append(
            f"| {s} | {res['n_fake']} | {res['fid']:.2f} | "
            f"{1000 * res['kid_mean']:.2f} ± {1000 * res['kid_std']:.2f} |"
        )
    label = feature_label(feature)
    resize = (
        "each image at its own size, the network's own resize"
        if size is None
        else f"images resized (bicubic) to {size}² first"
    )
    lines += [f"Features: {label or 'n/a'}; {resize}.", "", *table, ""]
    return lines


__all__ = [
    "RandomConvFeatures",
    "fid_kid",
    "inception_features",
    "extract_features",
    "fid_kid_from_features",
    "clip_score",
    "load_image_folder",
    "images_to_uint8",
    "quality_lines",
    "prompt_set",
]
