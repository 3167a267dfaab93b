"""Harm densities from CLIP: concept similarities and the Stable Diffusion safety checker.

Images are tensors (B, 3, H, W) in [-1, 1] (the VAE's output range). Preprocessing is
differentiable: ``(x + 1) / 2``, a bicubic resize to the CLIP size and a mean/std normalisation
(``preprocessing`` below). No clamp to [0, 1] (it would block gradients).

Single concept (thesis): ``p_h^c(x) = cos(E_img(x), E_text(c))`` in (-1, 1). With concepts
c_1..c_M and cosines s_j = p_h^{c_j}(x), the ``reduction`` gives the log-density guidance
differentiates (every value is clamped to ``eps`` before its log — ``[v]⁺ = max(v, eps)`` — so
the log is defined, and its gradient zero, where a cosine is <= 0; the author's code gives NaN):

    "mean"          log [ (1/M) Σ_j s_j ]⁺                   multi-concept (slides)
    "topk"          log [ (1/K) Σ_{j in top K} s_j ]⁺        topK-multi-concept (slides)
    "max"           log [ max_j s_j ]⁺                       K = 1
    "sum_log_topk"  Σ_{j in top K} log [s_j]⁺                the author's code (default K = 1)
    "matching"      log softmax(τ [s_1..s_M, s_safe])_1       CLIP matching (the author's code)

``prob`` (what the CDTC threshold compares) is the largest single-concept value — the cosine —
so the correction fires as soon as ANY concept passes the threshold (slides).

"matching" has two explicit options, defaulting to the author's ``CLIP_matching``:

* ``matching_tau``: τ = 1.0 (the author's: a softmax over the raw cosines) or ``"logit_scale"``
  (CLIP's learned logit scale, 100 for OpenAI CLIP);
* ``matching_concept``: ``"first"`` (the author's: ``prob`` = p_1 = softmax(...)_1, the FIRST
  concept's probability, and ``log_prob = log p_1``) or ``"max"`` (``prob`` = max_j p_j, and
  ``log_prob = log(1 - p_safe) = log Σ_j p_j``).

``matching_tau="logit_scale", matching_concept="max"`` is this package's earlier "matching"
(before the author's version became the default); it is kept under those names.

Preprocessing (``preprocessing=``): ``"clip"`` (default) uses the CLIP processor's own mean/std
and an antialiased bicubic resize of the shorter side plus a centre crop; ``"author"`` is the
author's ``CLIP_cosine.preprocess`` (what the thesis' η = 0.23 was tuned with): ImageNet's
mean/std (`IMAGENET_MEAN`, `IMAGENET_STD`; its CLIP mean/std line is commented out) and
torchvision 0.12's tensor ``resize`` to (size, size): bicubic WITHOUT antialiasing, both sides
(`clip_preprocess`, ``resize="author"``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..core.density import HarmDensity

REDUCTIONS = ("mean", "topk", "max", "sum_log_topk", "matching")
PREPROCESSINGS = ("clip", "author")
#: `clip_preprocess`'s resizes: CLIP's (antialiased, crop) and the author's (no antialias).
RESIZES = ("clip", "author")
MATCHING_CONCEPTS = ("first", "max")
# OpenAI CLIP's preprocessing constants (CLIPImageProcessor's defaults).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet's constants: the author's code preprocesses for CLIP with these (preprocessing="author").
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAFE_PROMPT = "A safe picture"  # the author's spelling (CLIP's tokenizer lower-cases it)


def _features(output) -> torch.Tensor:
    """transformers 5 returns a ModelOutput from get_*_features (embedding: pooler_output)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot read an embedding from {type(output).__name__}")
    return pooled


def clip_preprocess(
    x: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD, *, resize: str = "clip"
) -> torch.Tensor:
    """Differentiable CLIP preprocessing of images (B, 3, H, W) in [-1, 1] -> (B, 3, size, size).

    ``(x + 1) / 2``, a resize to ``size`` × ``size``, ``(x - mean) / std``. Gradients pass
    everywhere (no clamp). ``mean``/``std``: 3 numbers, or tensors (3,) already on x's device
    (no host-to-device copy, i.e. no CUDA sync, per call). ``resize``:

    * ``"clip"``: bicubic antialiased resize of the shorter side to ``size``, centre crop (as
      CLIP's own processor, up to PIL's resampling);
    * ``"author"``: the author's ``CLIP_cosine.preprocess``: torchvision's
      ``F.resize(x, (size, size), BICUBIC)`` on a tensor, which in the author's pinned
      torchvision 0.12 does NOT antialias (``antialias=None`` means off for tensors): a direct
      bicubic resize of both sides (no aspect-preserving crop), ``align_corners=False``.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
    # Resize in at least float32 (antialiased bicubic has no bfloat16 CPU kernel, and fp16
    # loses precision); the caller casts the result to the model's dtype.
    x = (x.to(torch.promote_types(x.dtype, torch.float32)) + 1) / 2
    H, W = x.shape[-2:]
    if resize == "author":
        if (H, W) != (size, size):
            x = F.interpolate(
                x, size=(size, size), mode="bicubic", antialias=False, align_corners=False
            )
    elif (H, W) != (size, size):
        scale = size / min(H, W)
        new = (max(size, round(H * scale)), max(size, round(W * scale)))
        x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    m, s = (
        v.to(device=x.device, dtype=x.dtype)
        if isinstance(v, torch.Tensor)
        else torch.as_tensor(v, dtype=x.dtype, device=x.device)
        for v in (mean, std)
    )
    m, s = m.view(1, 3, 1, 1), s.view(1, 3, 1, 1)
    return (x - m) / s


def _register_pixel_stats(density: HarmDensity) -> None:
    """Mean/std as non-persistent float64 buffers (3,) on the model's device, copied once rather
    than at every call (a host-to-device copy synchronises CUDA); cast to the images' dtype."""
    device = next(density.parameters()).device
    for name, value in (("_mean", density.image_mean), ("_std", density.image_std)):
        density.register_buffer(
            name, torch.tensor(value, dtype=torch.float64, device=device), persistent=False
        )


def _processor_parts(tokenizer_or_processor):
    """(tokenizer, image_mean, image_std, crop size or None) from a tokenizer or CLIPProcessor."""
    image_processor = getattr(tokenizer_or_processor, "image_processor", None)
    tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
    if not callable(tokenizer):
        raise TypeError(
            "tokenizer_or_processor must be a CLIP tokenizer or CLIPProcessor, got "
            f"{type(tokenizer_or_processor).__name__}"
        )
    mean, std, size = CLIP_MEAN, CLIP_STD, None
    if image_processor is not None:
        mean = tuple(image_processor.image_mean)
        std = tuple(image_processor.image_std)
        crop = getattr(image_processor, "crop_size", None)
        if isinstance(crop, dict):
            size = crop.get("height")
    return tokenizer, mean, std, size


def _check_reduction(reduction: str, k, n_concepts: int) -> int:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction in ("topk", "sum_log_topk"):
        if k is None:
            k = 1 if reduction == "sum_log_topk" else n_concepts
        if isinstance(k, bool) or not isinstance(k, int) or not (1 <= k <= n_concepts):
            raise ValueError(
                f"k must be an integer in [1, {n_concepts}] (the number of concepts), got {k!r}"
            )
        return k
    if k is not None:
        raise ValueError(f"k is only used with reduction 'topk' or 'sum_log_topk', got k={k!r}")
    return n_concepts


def reduce_log(sims: torch.Tensor, reduction: str, k: int, eps: float) -> torch.Tensor:
    """log p_h from cosine similarities (B, M) for the cosine reductions -> (B,)."""
    # log is undefined for a value <= 0: clamp to eps before every log (no NaN, zero gradient).
    if reduction == "mean":
        return sims.mean(dim=-1).clamp(min=eps).log()
    if reduction == "max":
        return sims.max(dim=-1).values.clamp(min=eps).log()
    top = sims.topk(k, dim=-1).values
    if reduction == "topk":
        return top.mean(dim=-1).clamp(min=eps).log()
    if reduction == "sum_log_topk":  # the author's code: a sum of per-concept logs
        return top.clamp(min=eps).log().sum(dim=-1)
    raise ValueError(f"reduction {reduction!r} has no cosine log-density")


def _pixel_stats(preprocessing: str, mean, std, image_mean=None, image_std=None):
    """(mean, std) for ``preprocessing`` "clip" (``image_mean``/``image_std`` if given, else the
    processor's ``mean``/``std``) or "author" (ImageNet's; explicit mean/std then conflict)."""
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {preprocessing!r}")
    if preprocessing == "author":
        if image_mean is not None or image_std is not None:
            raise ValueError(
                "image_mean/image_std can't be combined with preprocessing='author' (which fixes "
                "ImageNet's mean/std); use preprocessing='clip' to set them"
            )
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(image_mean or mean), tuple(image_std or std)


def _check_concepts(concepts) -> tuple[str, ...]:
    if isinstance(concepts, str):
        concepts = (concepts,)
    concepts = tuple(concepts)
    if not concepts or not all(isinstance(c, str) and c.strip() for c in concepts):
        raise ValueError(
            f"concepts must be a non-empty list of non-empty strings, got {concepts!r}"
        )
    return concepts


class CLIPConceptDensity(HarmDensity):
    """p_h from CLIP similarities between an image and harmful text concepts.

    Args:
        clip_model: a transformers ``CLIPModel`` (``get_image_features``, ``get_text_features``).
        tokenizer_or_processor: its tokenizer, or a ``CLIPProcessor`` (whose image mean/std and
            crop size are then used).
        concepts: one string or a list of M >= 1 strings.
        reduction: one of `REDUCTIONS` (module docstring).
        k: K for "topk" (default M) and "sum_log_topk" (default 1).
        safe_prompt: the extra "safe" text of the "matching" reduction.
        matching_tau: τ of "matching": a positive number (default 1.0, the author's) or
            "logit_scale" (CLIP's learned scale, this package's earlier choice).
        matching_concept: "first" (default, the author's: the first concept's probability) or
            "max" (the largest concept probability; log_prob = log(1 - p_safe)).
        eps: floor of the cosines before the log (> 0).
        preprocessing: "clip" (default: the processor's mean/std, antialiased resize and
            crop) or "author" (the author's code: ImageNet's mean/std, bicubic resize without
            antialiasing; `clip_preprocess`).
        image_size, image_mean, image_std: override the preprocessing (default: the processor's,
            else the model's vision ``image_size`` and OpenAI CLIP's constants; mean/std only
            with preprocessing="clip").

    Shapes: images x (B, 3, H, W) in [-1, 1]; ``similarities(x)`` (B, M); ``prob``, ``log_prob``
    and ``score`` (B,). The text embeddings are computed once, without gradients.
    """

    def __init__(
        self,
        clip_model,
        tokenizer_or_processor,
        concepts,
        reduction: str = "mean",
        k: int | None = None,
        *,
        safe_prompt: str = SAFE_PROMPT,
        matching_tau: float | str = 1.0,
        matching_concept: str = "first",
        eps: float = 1e-6,
        preprocessing: str = "clip",
        image_size: int | None = None,
        image_mean=None,
        image_std=None,
    ):
        super().__init__()
        self.concepts = _check_concepts(concepts)
        # prob is a cosine in [-1, 1]; with "matching", a softmax probability in [0, 1].
        self.prob_range = (0.0, 1.0) if reduction == "matching" else (-1.0, 1.0)
        self.reduction = reduction
        self.k = _check_reduction(reduction, k, len(self.concepts))
        if not (isinstance(eps, (int, float)) and 0 < eps < 1):
            raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")
        self.eps = float(eps)
        if matching_concept not in MATCHING_CONCEPTS:
            raise ValueError(
                f"matching_concept must be one of {MATCHING_CONCEPTS}, got {matching_concept!r}"
            )
        if matching_tau != "logit_scale" and not (
            isinstance(matching_tau, (int, float))
            and not isinstance(matching_tau, bool)
            and 0 < matching_tau < float("inf")
        ):
            raise ValueError(
                f"matching_tau must be a positive number or 'logit_scale', got {matching_tau!r}"
            )
        self.matching_concept = matching_concept
        self.preprocessing = preprocessing
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(clip_model, method, None)):
                raise TypeError(
                    f"clip_model must be a transformers CLIPModel, got {type(clip_model).__name__}"
                )
        self.clip_model = clip_model.eval()
        self.clip_model.requires_grad_(False)
        tokenizer, mean, std, size = _processor_parts(tokenizer_or_processor)
        self.image_size = int(image_size or size or clip_model.config.vision_config.image_size)
        self.image_mean, self.image_std = _pixel_stats(
            preprocessing, mean, std, image_mean, image_std
        )
        _register_pixel_stats(self)
        texts = list(self.concepts) + ([safe_prompt] if reduction == "matching" else [])
        self.safe_prompt = safe_prompt if reduction == "matching" else None
        self.register_buffer("text_embeds", self._embed_text(tokenizer, texts))
        scale = getattr(clip_model, "logit_scale", None)
        self.logit_scale = float(scale.exp()) if scale is not None else 100.0
        self.matching_tau = matching_tau
        # The temperature multiplying the cosines in "matching" (1.0 for the author's).
        self.tau = self.logit_scale if matching_tau == "logit_scale" else float(matching_tau)

    def _embed_text(self, tokenizer, texts) -> torch.Tensor:
        device = next(self.clip_model.parameters()).device
        tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        with torch.no_grad():
            emb = _features(
                self.clip_model.get_text_features(
                    input_ids=tokens["input_ids"].to(device),
                    attention_mask=tokens["attention_mask"].to(device),
                )
            )
        return F.normalize(emb.float(), dim=-1)

    @classmethod
    def from_pretrained(
        cls,
        clip_id_or_path,
        concepts,
        reduction="mean",
        k=None,
        *,
        torch_dtype=None,
        device=None,
        **kwargs,
    ):
        """Load a CLIP model and processor (hub id or local folder; clear error when absent)."""
        from transformers import CLIPModel, CLIPProcessor

        from .hub import load_pretrained

        name = os.fspath(clip_id_or_path)
        model = load_pretrained(CLIPModel.from_pretrained, name, dtype=torch_dtype)
        processor = load_pretrained(CLIPProcessor.from_pretrained, name)
        if device is not None:
            model = model.to(device)
        return cls(model, processor, concepts, reduction=reduction, k=k, **kwargs)

    # ------------------------------------------------------------------ embeddings
    def image_embeds(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm CLIP image embeddings of images (B, 3, H, W) in [-1, 1] -> (B, D)."""
        dtype = next(self.clip_model.parameters()).dtype
        pixels = clip_preprocess(
            x, self.image_size, self._mean, self._std, resize=self.preprocessing
        ).to(dtype)
        emb = _features(self.clip_model.get_image_features(pixel_values=pixels))
        return F.normalize(emb.float(), dim=-1)

    def _all_sims(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_embeds(x) @ self.text_embeds.T

    def similarities(self, x: torch.Tensor) -> torch.Tensor:
        """Cosines p_h^{c_j}(x) with each concept, shape (B, M) (the safe prompt excluded)."""
        return self._all_sims(x)[:, : len(self.concepts)]

    def concept_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Per-concept values (B, M): cosines, or the matching softmax's concept probabilities."""
        sims = self._all_sims(x)
        if self.reduction == "matching":
            return (self.tau * sims).softmax(dim=-1)[:, : len(self.concepts)]
        return sims

    # ------------------------------------------------------------------ density
    def prob(self, x: torch.Tensor) -> torch.Tensor:
        """The largest single-concept value (B,): CDTC fires when ANY concept passes; with
        "matching" and ``matching_concept="first"`` the first concept's probability."""
        return self._prob_from(self.concept_probs(x))

    def _prob_from(self, values: torch.Tensor) -> torch.Tensor:
        if self.reduction == "matching" and self.matching_concept == "first":
            return values[:, 0]
        return values.max(dim=-1).values

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_h^C(x) of the chosen reduction, shape (B,); finite for any cosine."""
        return self._log_from_sims(self._all_sims(x))

    def prob_and_log_prob(self, x: torch.Tensor):
        """Both from one CLIP image encoding: (prob (B,) without graph, log_prob (B,))."""
        sims = self._all_sims(x)
        values = sims.detach()
        if self.reduction == "matching":
            values = (self.tau * values).softmax(dim=-1)
        return self._prob_from(values[:, : len(self.concepts)]), self._log_from_sims(sims)

    def _log_from_sims(self, sims: torch.Tensor) -> torch.Tensor:
        if self.reduction == "matching":
            logits = self.tau * sims
            if self.matching_concept == "first":  # the author's: log p_1
                return logits.log_softmax(dim=-1)[:, 0]
            harmful = logits[:, : len(self.concepts)].logsumexp(dim=-1)
            return harmful - logits.logsumexp(dim=-1)  # log(1 - p_safe)
        return reduce_log(sims, self.reduction, self.k, self.eps)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """p_h^C(x) = exp(log_prob(x)) (the reduced multi-concept value), shape (B,)."""
        return self.log_prob(x).exp()

    def __repr__(self) -> str:
        matching = (
            f"matching_tau={self.matching_tau!r}, matching_concept={self.matching_concept!r}, "
            if self.reduction == "matching"
            else ""
        )
        return (
            f"CLIPConceptDensity(concepts={list(self.concepts)}, reduction={self.reduction!r}, "
            f"k={self.k}, {matching}preprocessing={self.preprocessing!r}, "
            f"image_size={self.image_size})"
        )


class SafetyCheckerDensity(HarmDensity):
    """p_h from diffusers' ``StableDiffusionSafetyChecker``: its CLIP vision tower, projection
    and 17 + 3 concept embeddings, made differentiable (the checker's forward is no_grad).

    Cosines s_j of the projected image embedding with the 17 concept and (``special_care=True``,
    default) the 3 special-care embeddings, (B, 20) or (B, 17). ``log_prob`` reduces them like
    `CLIPConceptDensity` (default "mean": the thesis' SD-filter multi-concept). Using the
    checker's embeddings as p_h at all is OUR interpretation of the thesis' "SD-filter" (the
    released code builds p_h from text concepts only); the checker itself uses its special-care
    concepts only as a +0.01 adjustment of the 17 thresholds, so ``special_care=False`` is the
    other defensible reading. ``prob``:

    * ``score="cosine"`` (default): max_j s_j over the included concepts. UNCALIBRATED: these
      are cosines in the checker's ViT-L/14 projection space, not the ViT-B/16 text-concept
      cosines η = 0.23 was tuned on, and nothing published gives this space's threshold; the
      ``sd-filter`` preset still uses 0.23 (the thesis' number, applied as-is). Measure the gate
      firing rate with ``safescore calibrate`` before reading its results;
    * ``score="margin"``: the filter's own decision value, max_j (s_j - w_j + a) over the 17
      concepts, with w_j the checker's per-concept thresholds and a = 0.01 when a special-care
      concept fires; ``prob >= 0`` is (up to the filter's rounding to 3 decimals) "the safety
      checker would black this image out".

    Args:
        safety_checker: a ``StableDiffusionSafetyChecker``.
        reduction, k, eps: as `CLIPConceptDensity` ("matching" is not available).
        score: "cosine" | "margin".
        special_care: include the 3 special-care embeddings in the cosines and the reduction
            (True, default) or only the 17 concept embeddings (False). The "margin" score always
            uses them, as the filter does.
        preprocessing: "clip" (default: the feature extractor's, else CLIP's mean/std) or
            "author" (ImageNet's mean/std and the unantialiased resize of the author's code).
        feature_extractor: optional ``CLIPImageProcessor`` giving mean/std/crop size.
    """

    SCORES = ("cosine", "margin")

    def __init__(
        self,
        safety_checker,
        reduction: str = "mean",
        k: int | None = None,
        *,
        score: str = "cosine",
        eps: float = 1e-6,
        special_care: bool = True,
        preprocessing: str = "clip",
        feature_extractor=None,
    ):
        super().__init__()
        for attr in ("vision_model", "visual_projection", "concept_embeds", "special_care_embeds"):
            if not hasattr(safety_checker, attr):
                raise TypeError(
                    "safety_checker must be a diffusers StableDiffusionSafetyChecker, got "
                    f"{type(safety_checker).__name__}"
                )
        if reduction == "matching":
            raise ValueError("reduction 'matching' needs text prompts; use CLIPConceptDensity")
        if not isinstance(special_care, bool):
            raise ValueError(f"special_care must be True or False, got {special_care!r}")
        self.special_care = special_care
        n = safety_checker.concept_embeds.shape[0]
        if special_care:
            n += safety_checker.special_care_embeds.shape[0]
        self.reduction = reduction
        self.k = _check_reduction(reduction, k, n)
        if score not in self.SCORES:
            raise ValueError(f"score must be one of {self.SCORES}, got {score!r}")
        self.score_kind = score
        # A cosine lies in [-1, 1]; a margin s_j - w_j + a in [-2, 2] (w_j in [0, 1], a <= 0.01).
        self.prob_range = (-1.0, 1.0) if score == "cosine" else (-2.0, 2.0)
        self.eps = float(eps)
        self.safety_checker = safety_checker.eval()
        self.safety_checker.requires_grad_(False)
        size = safety_checker.config.vision_config.image_size
        mean, std = CLIP_MEAN, CLIP_STD
        if feature_extractor is not None:
            _, mean, std, crop = _processor_parts(_Wrap(feature_extractor))
            size = crop or size
        self.preprocessing = preprocessing
        self.image_size = int(size)
        self.image_mean, self.image_std = _pixel_stats(preprocessing, mean, std)
        _register_pixel_stats(self)

    def similarities(self, x: torch.Tensor) -> torch.Tensor:
        """Cosines with the 17 concepts, then (``special_care=True``) the 3 special-care
        concepts: shape (B, 20), or (B, 17) with ``special_care=False``."""
        sims = self._all_similarities(x)
        if self.special_care:
            return sims
        return sims[:, : self.safety_checker.concept_embeds.shape[0]]

    def _all_similarities(self, x: torch.Tensor) -> torch.Tensor:
        """Cosines with all 17 + 3 embeddings, shape (B, 20)."""
        sc = self.safety_checker
        dtype = sc.visual_projection.weight.dtype
        pixels = clip_preprocess(
            x, self.image_size, self._mean, self._std, resize=self.preprocessing
        ).to(dtype)
        pooled = sc.vision_model(pixels)[1]
        emb = F.normalize(sc.visual_projection(pooled).float(), dim=-1)
        concepts = torch.cat([sc.concept_embeds, sc.special_care_embeds]).float()
        return emb @ F.normalize(concepts, dim=-1).T

    def margins(self, x: torch.Tensor) -> torch.Tensor:
        """The filter's concept scores s_j - w_j + a, shape (B, 17) (> 0: concept detected)."""
        sc = self.safety_checker
        sims = self._all_similarities(x)
        n = sc.concept_embeds.shape[0]
        special = sims[:, n:] - sc.special_care_embeds_weights.float()
        adjustment = 0.01 * (special > 0).any(dim=-1, keepdim=True).to(sims.dtype)
        return sims[:, :n] - sc.concept_embeds_weights.float() + adjustment

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.score_kind == "margin":
            return self.margins(x).max(dim=-1).values
        return self.similarities(x).max(dim=-1).values

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_log(self.similarities(x), self.reduction, self.k, self.eps)

    def __repr__(self) -> str:
        return (
            f"SafetyCheckerDensity(reduction={self.reduction!r}, k={self.k}, "
            f"score={self.score_kind!r}, special_care={self.special_care}, "
            f"preprocessing={self.preprocessing!r}, image_size={self.image_size})"
        )


class _Wrap:
    """Present an image processor as a processor (for `_processor_parts`)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor
        self.tokenizer = lambda *a, **k: None


__all__ = [
    "CLIPConceptDensity",
    "SafetyCheckerDensity",
    "clip_preprocess",
    "REDUCTIONS",
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PREPROCESSINGS",
    "MATCHING_CONCEPTS",
]
