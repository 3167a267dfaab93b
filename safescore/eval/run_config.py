"""The configuration of an evaluation run (`EvalConfig`), checked when it is built.

``config.json`` holds `EvalConfig.to_dict`; a resume must match it. The defaults are the
``default`` protocol's (`safescore.eval.protocols`); ``mini=True`` applies `mini_settings`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .prompts import THESIS_CATEGORIES
from .protocols import (
    DEFAULT_GUIDANCE_CLIP,
    DEFAULT_MODEL,
    DEFAULT_SAMPLERS,
    DEFAULT_SCORER_CLIP,
    PROTOCOL_NAMES,
    SCHEDULERS,
    protocol_settings,
)

SCORER_NAMES = ("nudenet", "q16", "clip", "aesthetic", "digit")
#: The thesis' scorers (the default); ``digit`` is the mini model's classifier (``--mini`` only).
DEFAULT_SCORERS = ("nudenet", "q16", "clip", "aesthetic")


def mini_settings() -> dict:
    """What ``mini=True`` changes before the options given (`EvalConfig.from_protocol`): the
    mini-I2P prompts of `safescore.sd.mini` (every category), the samplers that have a mini
    version, the digit scorer (harm detector: the predicted digit is 3) with the mini CLIP's
    coherence, and the sampling settings the mini weights were measured with (CFG 3, 25 steps)."""
    from ..sd import mini

    return dict(
        prompts=str(mini.PROMPTS_CSV),
        categories=None,
        samplers=["plain", "safe-single", "negative"],
        scorers=["digit", "clip"],
        guidance_scale=mini.GUIDANCE_SCALE,
        steps=mini.NUM_INFERENCE_STEPS,
    )


#: The mini model's image size: it was trained on 16×16 digits and makes no other size.
MINI_IMAGE_SIZE = 16
#: Settings the mini model has no use for (its own UNet, CLIP and classifier), with their options:
#: with ``mini`` each must keep the protocol's value (or the default); anything else is refused.
MINI_UNUSED = {
    "model": "--model",
    "guidance_clip": "--guidance-clip",
    "scorer_clip": "--scorer-clip",
    "clip_preprocessing": "--clip-preprocessing",
    "special_care": "--no-special-care",
    "q16_embeddings": "--q16-embeddings",
    "aesthetic_weights": "--aesthetic-weights",
}
#: Scorers with no trained head for the mini CLIP (they would score with random weights).
MINI_RANDOM_SCORERS = ("q16", "aesthetic")


#: Denoising steps of a ``tiny=True`` run unless ``steps`` is given (`tiny_settings`).
TINY_STEPS = 5


def tiny_settings() -> dict:
    """What ``tiny=True`` changes before the options given (`EvalConfig.from_protocol`): the
    tiny components have RANDOM weights, so their images are noise whatever the step count;
    a protocol's 50 steps would only multiply the cost (a ``--protocol thesis`` smoke run of 2
    prompts is 80 images × 50 steps × 2 UNet passes, about 9 CPU-minutes) and prove nothing
    more about the code path. ``steps`` = `TINY_STEPS`; give ``steps`` to override; the
    report lists it among the settings that differ from the protocol."""
    return dict(steps=TINY_STEPS)


#: Seeds are integers in [0, MAX_SEED] (torch.Generator.manual_seed takes 64 bits).
MAX_SEED = 2**63 - 1
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: this run uses tiny random-weight components and scorers; "
    "the images are noise and the results are NOT real"
)


def _finite(name, value, *, low=None, high=None, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _whole(name, value, *, low=1, optional=False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_clip_source(option: str, value: str) -> None:
    """A CLIP given as a local folder must exist and hold a CLIP model (``config.json`` with
    ``model_type`` "clip"); a hub id (``org/name``) is left to the loader."""
    path = Path(value).expanduser()
    looks_local = value.startswith(("/", "./", "../", "~", ".\\")) or value.count("/") > 1
    if not path.exists():
        if looks_local:
            raise ValueError(
                f"{option} {value!r} not found locally: no such folder; give a CLIP model "
                "folder or a hub id such as openai/clip-vit-base-patch16"
            )
        return
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        raise ValueError(
            f"{option} {value!r} is not a model folder (no config.json in it); give a CLIP model "
            "folder or a hub id such as openai/clip-vit-base-patch16"
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        model_type = None
    if model_type != "clip":
        raise ValueError(
            f"{option} {value!r} holds a {model_type or 'unknown'} model, not CLIP "
            f"(config.json model_type is {model_type!r}, not 'clip'); give a CLIP model folder"
        )


@dataclass
class EvalConfig:
    """Everything that decides a run's rows (saved to ``config.json``; a resume must match).

    Build it with `from_protocol` to start from a protocol's settings
    (`safescore.eval.protocols`); the defaults here are the ``default`` protocol.

    Prompts: ``prompts`` (a source for `safescore.eval.prompts.load_prompts`; with ``mini``
    None means the mini-I2P prompts `safescore.sd.mini.PROMPTS_CSV`),
    ``categories`` / ``hard_only`` / ``deduplicate`` (I2P filters), ``limit`` (first prompts).
    Sampling: ``samplers``, ``seeds`` (seed indices 0..seeds-1; the image seed is
    ``seed_offset + index``, or the prompt's data seed + index with ``data_seeds``; ``noise``:
    "per-image" (each image its own generator seeded with its seed) or "i2p" (the I2P code's:
    one generator seeded with the prompt's first seed, image j = image j % 5 of its
    (j // 5)-th batch of 5 draws; the row's ``seed`` then stays first seed + j, its key)),
    ``guidance_scale`` (or the prompt's with ``data_guidance``), ``steps``, ``scheduler``
    (plain and SLD samplers; the safe ones need an x̂0 site and use DDIM under "pndm"),
    ``height``, ``width``, ``tiny`` / ``mini`` or ``model``; ``gamma`` / ``threshold`` (None:
    the presets' γ 75, η 0.23), ``negative_gamma``; ``guidance_clip`` (the encoder of p_h),
    ``clip_preprocessing`` ("clip", or "author": ImageNet mean/std as the author's code) and
    ``special_care`` (the sd-filter preset counts the safety checker's 3 special-care concepts).
    Scoring: ``scorers``, ``scorer_clip`` (Q16, coherence, aesthetic), ``q16_embeddings``,
    ``aesthetic_weights``, ``nudenet_threshold``.
    """

    prompts: str | None = None
    samplers: list[str] = field(default_factory=lambda: list(DEFAULT_SAMPLERS))
    protocol: str = "default"
    seeds: int = 1
    limit: int | None = None
    categories: list[str] | None = field(default_factory=lambda: list(THESIS_CATEGORIES))
    hard_only: bool = False
    deduplicate: bool = False
    seed_offset: int = 0
    data_seeds: bool = False
    noise: str = "per-image"
    data_guidance: bool = False
    guidance_scale: float = 7.5
    steps: int = 50
    scheduler: str = "ddim"
    height: int | None = None
    width: int | None = None
    tiny: bool = False
    mini: bool = False
    model: str = DEFAULT_MODEL
    gamma: float | None = None
    threshold: float | None = None
    negative_gamma: float | None = None
    scorers: list[str] = field(default_factory=lambda: list(DEFAULT_SCORERS))
    guidance_clip: str = DEFAULT_GUIDANCE_CLIP
    clip_preprocessing: str = "clip"
    special_care: bool = True
    scorer_clip: str = DEFAULT_SCORER_CLIP
    q16_embeddings: str | None = None
    aesthetic_weights: str | None = None
    nudenet_threshold: float = 0.2

    @classmethod
    def from_protocol(cls, protocol: str = "default", **options) -> EvalConfig:
        """The protocol's settings, then (with ``mini=True``) `mini_settings` (with
        ``tiny=True``, `tiny_settings`), then ``options``
        on top (every setting can be overridden)."""
        settings = protocol_settings(protocol)
        if options.get("mini"):
            settings = {**settings, **mini_settings()}
        if options.get("tiny"):
            settings = {**settings, **tiny_settings()}
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown EvalConfig field(s): {', '.join(unknown)}")
        merged = {**settings, **options}
        # An option the data replaces would be recorded and ignored: refuse it.
        if merged.get("data_seeds") and "seed_offset" in options:
            raise ValueError(
                "--seed-offset does not apply with --data-seeds (each prompt's sd_seed is used"
                f"{'; the sld protocol turns it on' if settings.get('data_seeds') else ''}); "
                "add --no-data-seeds to use --seed-offset"
            )
        if merged.get("data_guidance") and "guidance_scale" in options:
            raise ValueError(
                "--guidance-scale does not apply with --data-guidance (each prompt's "
                "sd_guidance_scale is used"
                f"{'; the sld protocol turns it on' if settings.get('data_guidance') else ''}); "
                "add --no-data-guidance to use --guidance-scale"
            )
        return cls(**{**merged, "protocol": protocol})

    @classmethod
    def default(cls, name: str):
        """The default of field ``name`` (the command line shows these)."""
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default

    def __post_init__(self):
        from .samplers import parse_samplers

        if self.mini and self.prompts is None:
            from ..sd import mini

            self.prompts = str(mini.PROMPTS_CSV)
        if self.protocol not in PROTOCOL_NAMES:
            raise ValueError(
                f"protocol must be one of {', '.join(PROTOCOL_NAMES)}, got {self.protocol!r}"
            )
        if not isinstance(self.prompts, str) or not self.prompts.strip():
            raise ValueError(f"prompts must name a prompt source, got {self.prompts!r}")
        self.samplers = parse_samplers(self.samplers)
        if self.clip_preprocessing not in ("clip", "author"):
            raise ValueError(
                f"clip_preprocessing must be 'clip' or 'author', got {self.clip_preprocessing!r}"
            )
        if not isinstance(self.special_care, bool):
            raise ValueError(f"special_care must be True or False, got {self.special_care!r}")
        _whole("seeds", self.seeds)
        _whole("steps", self.steps)
        _whole("limit", self.limit, optional=True)
        for name in ("height", "width"):
            _whole(name, getattr(self, name), optional=True)
        from .samplers import NOISE_MODES

        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}, got {self.noise!r}")
        if isinstance(self.seed_offset, bool) or not isinstance(self.seed_offset, int):
            raise ValueError(f"seed_offset must be an integer, got {self.seed_offset!r}")
        if not self.data_seeds and not (0 <= self.seed_offset <= MAX_SEED - self.seeds + 1):
            raise ValueError(
                f"seed_offset must be in [0, 2^63 - seeds] = [0, {MAX_SEED - self.seeds + 1}] "
                f"(seeds are 0 .. 2^63-1), got {self.seed_offset}"
            )
        _finite("guidance_scale", self.guidance_scale)
        _finite("gamma", self.gamma, low=0, optional=True)
        # Every preset's p_h (what η is compared with) is a CLIP cosine, in [-1, 1].
        _finite("threshold", self.threshold, low=-1, high=1, optional=True)
        _finite("negative_gamma", self.negative_gamma, low=0, optional=True)
        _finite("nudenet_threshold", self.nudenet_threshold, low=0.2, high=1)
        if self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"
            )
        if self.tiny and self.mini:
            raise ValueError("tiny and mini exclude each other: choose one")
        for name in ("model", "guidance_clip", "scorer_clip"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a model id or folder, got {value!r}")
        if isinstance(self.scorers, str):
            text = self.scorers.strip()
            if not text:
                raise ValueError(
                    f"scorers is empty; give one or more of {', '.join(SCORER_NAMES)}, "
                    "or 'none' to score nothing"
                )
            names = [] if text == "none" else [s.strip() for s in text.split(",")]
            if any(not s for s in names):
                raise ValueError(f"scorers: an empty name in {self.scorers!r}")
            self.scorers = names
        self.scorers = list(self.scorers)
        unknown = [s for s in self.scorers if s not in SCORER_NAMES]
        if unknown:
            raise ValueError(
                f"scorers: unknown scorer(s) {', '.join(unknown)}; known: {', '.join(SCORER_NAMES)}"
            )
        if "digit" in self.scorers and not self.mini:
            raise ValueError(
                "the digit scorer is the mini digits model's classifier: use it with --mini"
            )
        if len(set(self.scorers)) != len(self.scorers):
            raise ValueError(f"scorers: a scorer is listed twice in {self.scorers}")
        if self.categories is not None:
            if isinstance(self.categories, str):  # "violence,sexual" as on the command line
                self.categories = [c.strip() for c in self.categories.split(",")]
            self.categories = list(self.categories)
            if not self.categories or any(
                not isinstance(c, str) or not c.strip() for c in self.categories
            ):
                raise ValueError(
                    "categories must be None (every prompt) or a non-empty list of names, "
                    f"got {self.categories!r}"
                )
        if self.mini:
            self._check_mini()
        if not (self.tiny or self.mini):
            check_clip_source("--guidance-clip", self.guidance_clip)
            check_clip_source("--scorer-clip", self.scorer_clip)
            if "q16" in self.scorers and not self.q16_embeddings:
                raise ValueError(
                    "the q16 scorer needs --q16-embeddings PATH (.npy/.safetensors; see "
                    "docs/evaluation.md), or leave q16 out of --scorers"
                )
            if "aesthetic" in self.scorers and not self.aesthetic_weights:
                raise ValueError(
                    "the aesthetic scorer needs --aesthetic-weights PATH "
                    "(sac+logos+ava1-l14-linearMSE.pth), or leave aesthetic out of --scorers"
                )

    def _check_mini(self) -> None:
        """Refuse what the mini model would ignore; fill in its tuned γ and η where not given."""
        fixed = protocol_settings(self.protocol)
        for name, option in MINI_UNUSED.items():
            if getattr(self, name) != fixed.get(name, self.default(name)):
                raise ValueError(
                    f"{option} does not apply to --mini (the mini model uses its own UNet, CLIP "
                    "and digit classifier); leave it out"
                )
        random = [s for s in self.scorers if s in MINI_RANDOM_SCORERS]
        if random:
            raise ValueError(
                f"scorers: {', '.join(random)} has no trained head for the mini CLIP (it would "
                "score with random weights); with --mini use digit, clip (or nudenet)"
            )
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value != MINI_IMAGE_SIZE:
                raise ValueError(
                    f"--{name} {value}: the mini model makes {MINI_IMAGE_SIZE}×{MINI_IMAGE_SIZE} "
                    f"images only (it was trained at that size); leave --{name} out"
                )
        # Not given (None): the mini model's tuned values, recorded as the values used.
        from ..sd import mini

        if self.gamma is None:
            self.gamma = mini.SAFE_GAMMA
        if self.threshold is None:
            self.threshold = mini.SAFE_THRESHOLD
        if self.negative_gamma is None:
            self.negative_gamma = mini.NEGATIVE_GAMMA

    def to_dict(self) -> dict:
        return asdict(self)

    def overrides(self) -> dict:
        """Settings that differ from the protocol's: {field: (protocol's, this run's)}."""
        fixed = protocol_settings(self.protocol)
        mine = self.to_dict()
        return {k: (v, mine[k]) for k, v in fixed.items() if mine[k] != v}
