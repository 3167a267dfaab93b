"""A real, trained mini Stable Diffusion on scikit-learn's digits, shipped with the package.

Made of Stable Diffusion's own classes (``AutoencoderKL``, ``UNet2DConditionModel`` with
cross-attention on a ``CLIPTextModel``, a ``CLIPTokenizer`` on our own vocabulary,
``DDIMScheduler``) plus a tiny ``CLIPModel`` (for p_h) and a CNN digit classifier (the scorer of
generated images), all trained on a CPU by `safescore.sd.mini.train` and stored as
safetensors in `WEIGHTS_DIR`. Images are 16×16 (latents 8×8×4). Prompts
``"a handwritten {word}"`` and ``"the digit {d}"`` (zero … nine) are understood; see
``MODEL_CARD.md`` in `WEIGHTS_DIR` for the data, training and measured quality.

    from safescore.sd import mini
    pipe = mini.load_pipeline()
    out = pipe("a handwritten three", guidance=mini.safe_guidance(),
               num_inference_steps=25, guidance_scale=mini.GUIDANCE_SCALE, output_type="np")
    mini.digit_classifier().predict(out.images)      # digits 0-9

Importing this module trains nothing and loads no weights; every function loads on call.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...core.guidance import NegativeGuidance, SafeGuidance
from ..clip import REDUCTIONS, CLIPConceptDensity

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PROMPTS_CSV = Path(__file__).resolve().parent / "prompts" / "mini_i2p.csv"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HARMFUL_CONCEPT = "a handwritten three"

# Sampling settings the shipped weights were measured with (benchmarks/mini_quality.py).
GUIDANCE_SCALE = 3.0  # classifier-free guidance w
NUM_INFERENCE_STEPS = 25
# Safe sampling (x̂0 space, CDTC) on p_h = cos(CLIP(x), "a handwritten three"), chosen by the
# sweeps in docs/mini.md (benchmarks/mini_quality.py): the threshold sits above the p_h that x̂0
# reaches along most plain trajectories of the other digits (so CDTC leaves them alone) and below
# the lowest value on the three prompts. γ follows the noise level, γ_t = SAFE_GAMMA · √ᾱ_t
# (`safe_gamma`): a constant γ large enough to remove the 3s throws the blurry first x̂0's far
# off the manifold. Of the schedules tried, it has the most clean replacements among those that
# bring the harm rate to <= 0.05 by BOTH the harm detector (`digit_classifier`) and the
# independent judge (`safescore.sd.mini.judge.DigitJudge`) on three phrasings of "three".
SAFE_GAMMA = 3000.0
SAFE_THRESHOLD = 0.5
# Negative guidance (x_t space), same density and threshold: the smallest γ tried (100, 300, 600,
# 1000, 3000) that brings the harm rate to <= 0.05 by both judges.
NEGATIVE_GAMMA = 600.0

__all__ = [
    "WEIGHTS_DIR",
    "PROMPTS_CSV",
    "WORDS",
    "HARMFUL_CONCEPT",
    "GUIDANCE_SCALE",
    "NUM_INFERENCE_STEPS",
    "SAFE_GAMMA",
    "safe_gamma",
    "SAFE_THRESHOLD",
    "NEGATIVE_GAMMA",
    "load_pipeline",
    "load_clip",
    "clip_density",
    "safe_guidance",
    "negative_guidance",
    "digit_classifier",
    "DigitScorer",
]


def _check_concepts(concepts) -> None:
    if isinstance(concepts, str):
        concepts = [concepts]
    if (
        not isinstance(concepts, (list, tuple))
        or not concepts
        or not all(isinstance(c, str) and c.strip() for c in concepts)
    ):
        raise ValueError(
            "concepts must be a string or a non-empty list of non-empty strings "
            f"(e.g. {HARMFUL_CONCEPT!r}), got {concepts!r}"
        )


def _check_reduction(reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _check_number(name, value, low, high) -> None:
    """None (the tuned default) or a finite number in [low, high]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"{name} must be a finite number in [{low}, {high}] or None, got {value!r}"
        )
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}] or None, got {value!r}")


def _check_device(device) -> None:
    if device is not None and torch.device(device).type == "meta":
        raise ValueError(
            "device 'meta' holds no weights (meta tensors have no data); give 'cpu', 'cuda' or None"
        )


def _weights_dir(weights_dir=None) -> Path:
    path = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no mini model in {path} (model_index.json missing); train one with "
            "`python -m safescore.sd.mini.train --out DIR` (or `make mini-train`)"
        )
    return path


def load_pipeline(device=None, dtype=None, *, weights_dir=None):
    """The mini model as a `safescore.sd.SafeStableDiffusionPipeline`.

    Loaded with ``SafeStableDiffusionPipeline.from_pretrained`` on the shipped folder (the same
    loading code as real Stable Diffusion weights), with ``default_guidance_scale`` =
    `GUIDANCE_SCALE` (3.0) and ``default_num_inference_steps`` = `NUM_INFERENCE_STEPS` (25),
    the settings safe sampling was tuned at. ``pipe(prompt, ...)`` gives 16×16 images;
    ``output_type="np"``: ``.images`` (N, 16, 16, 3) float in [0, 1].

    Args:
        device: torch device (default CPU). dtype: torch dtype (default float32).
        weights_dir: another folder written by `safescore.sd.mini.train` (default the
            shipped `WEIGHTS_DIR`).
    """
    from ..pipeline import SafeStableDiffusionPipeline  # lazy: diffusers

    _check_device(device)
    pipe = SafeStableDiffusionPipeline.from_pretrained(str(_weights_dir(weights_dir)))
    if device is not None or dtype is not None:  # (diffusers renamed torch_dtype= to dtype=)
        pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    # The settings every tuned number of this model was measured at (`GUIDANCE_SCALE`,
    # `NUM_INFERENCE_STEPS`): ``pipe(prompt)`` without them uses these, not diffusers' 7.5 / 50.
    pipe.default_guidance_scale = GUIDANCE_SCALE
    pipe.default_num_inference_steps = NUM_INFERENCE_STEPS
    return pipe


def load_clip(device=None, dtype=None, *, weights_dir=None):
    """The mini ``CLIPModel`` (16×16 images, 32-dim embeddings) and its ``CLIPProcessor``.

    The processor's mean = std = 0.5, so CLIP preprocessing maps images in [-1, 1] to themselves.
    """
    from transformers import CLIPModel, CLIPProcessor

    _check_device(device)
    path = _weights_dir(weights_dir) / "clip"
    model = CLIPModel.from_pretrained(str(path)).eval()
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model, CLIPProcessor.from_pretrained(str(path))


def clip_density(concepts=(HARMFUL_CONCEPT,), reduction: str = "mean", *, device=None, **kwargs):
    """`CLIPConceptDensity` on the mini CLIP: p_h(x) = cos(E_img(x), E_text(concept)).

    Args:
        concepts: one string or a list of strings (e.g. ``"a handwritten three"``).
        reduction: as `CLIPConceptDensity` ("mean", "topk", "max", "sum_log_topk",
            "matching"); other keyword arguments go to it.
    Shapes: images (B, 3, H, W) in [-1, 1] (any H, W: resized to 16²); ``prob``/``log_prob`` (B,).
    """
    _check_concepts(concepts)
    _check_reduction(reduction)
    _check_device(device)
    model, processor = load_clip(device=device)
    return CLIPConceptDensity(model, processor, concepts, reduction, **kwargs)


def safe_gamma(gamma=None, *, weights_dir=None):
    """The γ schedule of `safe_guidance`: γ_t = gamma · √ᾱ_t (`safescore.signal_scaled`) on
    this model's noise schedule, gamma default `SAFE_GAMMA`. A number in [0, inf)."""
    from ...core.guidance import signal_scaled

    return signal_scaled(SAFE_GAMMA if gamma is None else gamma, _alphas_cumprod(weights_dir))


def _alphas_cumprod(weights_dir=None) -> tuple:
    path = _weights_dir(weights_dir) / "scheduler"
    return _alphas_cumprod_cached(str(path))


@functools.lru_cache(maxsize=4)
def _alphas_cumprod_cached(path: str) -> tuple:
    from diffusers import DDIMScheduler

    return tuple(DDIMScheduler.from_pretrained(path).alphas_cumprod.tolist())


def _check_guidance_arguments(concepts, gamma, threshold) -> None:
    """Before any weights load: concepts, γ >= 0 and η a cosine in [-1, 1] (None: tuned)."""
    _check_concepts(concepts)
    _check_number("gamma", gamma, 0, math.inf)
    _check_number("threshold", threshold, -1, 1)


def safe_guidance(concepts=(HARMFUL_CONCEPT,), *, gamma=None, threshold=None, device=None):
    """`safescore.SafeGuidance` on `clip_density`, tuned on this model.

    γ_t = gamma · √ᾱ_t (`safe_gamma`, gamma default `SAFE_GAMMA`), threshold default
    `SAFE_THRESHOLD` (on the cosine), chosen by the sweeps in docs/mini.md. Use it with
    ``pipe(..., guidance=...)``.
    """
    _check_guidance_arguments(concepts, gamma, threshold)
    return SafeGuidance(
        clip_density(concepts, device=device),
        safe_gamma(gamma),
        threshold=SAFE_THRESHOLD if threshold is None else threshold,
    )


def negative_guidance(concepts=(HARMFUL_CONCEPT,), *, gamma=None, threshold=None, device=None):
    """`safescore.NegativeGuidance` (x_t space, through the UNet) with the same density and
    threshold as `safe_guidance`, γ = `NEGATIVE_GAMMA` (tuned to the same harm
    reduction)."""
    _check_guidance_arguments(concepts, gamma, threshold)
    return NegativeGuidance(
        clip_density(concepts, device=device),
        NEGATIVE_GAMMA if gamma is None else gamma,
        threshold=SAFE_THRESHOLD if threshold is None else threshold,
    )


class DigitScorer:
    """The digit classifier of generated images (the NudeNet of this world).

    ``predict(images)`` -> int64 array (N,) of digits 0–9; ``predict_proba(images)`` -> (N, 10).
    ``images``: numpy (N, H, W, 3) or (N, H, W), float in [0, 1] (``output_type="np"``) or uint8
    in 0..255, or a torch
    tensor (N, 3, H, W) / (N, 1, H, W) in [-1, 1] (the VAE's range). RGB is averaged to grey and
    resized to 16² (antialiased bilinear). ``accuracy``: held-out accuracy on real digits.
    """

    def __init__(self, model: torch.nn.Module, accuracy: float, image_size: int = 16):
        self.model = model.eval()
        self.accuracy = float(accuracy)
        self.image_size = int(image_size)

    def _to_input(self, images) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            if images.dtype == np.uint8:  # 0..255 (PIL's): read as such, not as [0, 1]
                images = images.astype(np.float32) / 255.0
            elif images.dtype.kind != "f":
                raise ValueError(
                    "images: numpy arrays must be float in [0, 1] (output_type='np') or uint8 "
                    f"in 0..255, got dtype {images.dtype}"
                )
            if not np.isfinite(images).all():
                raise ValueError("images hold NaN or infinite values; give finite pixel values")
            low, high = float(images.min(initial=0.0)), float(images.max(initial=0.0))
            if low < -1e-3 or high > 1 + 1e-3:
                raise ValueError(
                    f"images: float numpy arrays must be in [0, 1] (output_type='np'), got "
                    f"values in [{low:g}, {high:g}]; divide 0..255 images by 255"
                )
            x = torch.from_numpy(np.asarray(images, dtype=np.float32))
            if x.ndim == 3:
                x = x[..., None]
            if x.ndim != 4 or x.shape[-1] not in (1, 3):
                raise ValueError(
                    f"images: numpy arrays must be (N, H, W, 3), (N, H, W, 1) or (N, H, W), "
                    f"got shape {tuple(images.shape)}"
                )
            x = x.permute(0, 3, 1, 2) * 2 - 1
        elif isinstance(images, torch.Tensor):
            x = images.detach().float().cpu()
            if not torch.isfinite(x).all():
                raise ValueError("images hold NaN or infinite values; give finite pixel values")
            if x.ndim != 4 or x.shape[1] not in (1, 3):
                raise ValueError(
                    f"images: tensors must be (N, 3, H, W) or (N, 1, H, W) in [-1, 1], "
                    f"got shape {tuple(images.shape)}"
                )
        else:
            raise TypeError(
                f"images must be a numpy array or a torch tensor, got {type(images).__name__}"
            )
        x = x.mean(dim=1, keepdim=True)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        return x

    @torch.no_grad()
    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities (N, 10)."""
        x = self._to_input(images)
        return self.model(x).softmax(dim=-1).numpy()

    def predict(self, images) -> np.ndarray:
        """Digits (N,) int64 in 0..9."""
        return self.predict_proba(images).argmax(axis=-1)

    def __repr__(self) -> str:
        return f"DigitScorer(held-out accuracy={self.accuracy:.3f})"


def digit_classifier(*, weights_dir=None) -> DigitScorer:
    """The shipped `DigitScorer` (a CNN trained on real digits; safetensors)."""
    from safetensors.torch import load_file

    from .train import DigitClassifier

    path = _weights_dir(weights_dir) / "classifier"
    config = json.loads((path / "config.json").read_text())
    model = DigitClassifier(width=int(config["width"]))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return DigitScorer(model, config["test_accuracy"], int(config["image_size"]))
