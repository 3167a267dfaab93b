"""The resumable, shardable, locked evaluation run: prompts × seeds × samplers -> images + rows.

Layout of a run directory::

    RUN_DIR/config.json            the run's configuration (a resume must match it)
    RUN_DIR/.evaluate.lock         held (``fcntl.flock``) while an ``evaluate`` writes here
    RUN_DIR/results.jsonl          one JSON object per finished image (the merged results)
    RUN_DIR/results.rank{K}.jsonl  process K's shard while a multi-process run is going on
    RUN_DIR/images/{sampler}/{prompt_id}-{hash}_s{seed}.png

Guarantees (nothing lost, nothing duplicated):

* One ``evaluate`` at a time per run directory: the directory is locked while a run writes to it;
  a second ``evaluate`` on the same folder refuses and names the holder (pid, host, command).
  The lock is an ``flock`` on ``.evaluate.lock``: the system releases it when its process dies.
* A row is appended (``write`` + ``flush`` + ``fsync``) as soon as its image is generated, saved
  and scored, so a crash or kill loses at most the batch in flight. A last line without its
  newline is kept when it is a whole row (the newline is added) and cut off when it is torn.
* Rerunning the same command resumes: finished rows (from every results file in the directory)
  are skipped, and no row is ever written twice. Rows in a folder without ``config.json`` are
  never adopted: such a folder is refused.
* A different configuration in the same directory is refused with the list of what differs.
* Image file names are unique per prompt id: ``{sanitised id}-{sha256(id)[:10]}``, so ids like
  ``a|b``, ``a_b`` and ``a/b`` get three files.
* A failure of one image (a non-finite value: ``FloatingPointError``; out of memory) is recorded
  as a row with ``"status": "failed"`` and its ``error``, and the run goes on; a batch that fails
  is retried one image at a time so only the failing images are marked. A rerun keeps failed
  rows as they are; ``retry_failed=True`` (``--retry-failed``) makes them again, and a
  successful row then supersedes the failed one.
* With Hugging Face Accelerate (``accelerate launch -m safescore evaluate ...``) process K of N
  takes the work items K, K+N, K+2N, ... and writes its own shard; process 0 holds the lock and
  writes the configuration before the others start, and merges the shards into
  ``results.jsonl`` at the end (``safescore report`` also merges, if a run was cut short).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterable
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

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"
LOCK_FILE = ".evaluate.lock"
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


#: Seeds are integers in [0, MAX_SEED] (torch.Generator.manual_seed takes 64 bits).
MAX_SEED = 2**63 - 1
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: this run uses tiny random-weight components and scorers; "
    "the images are noise and the results are NOT real"
)
#: Keys every results row has.
ROW_KEYS = ("prompt_id", "sampler", "seed")


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


@dataclass
class EvalConfig:
    """Everything that decides a run's rows (saved to ``config.json``; a resume must match).

    Build it with `from_protocol` to start from a protocol's settings
    (`safescore.eval.protocols`); the defaults here are the ``default`` protocol.

    Prompts: ``prompts`` (a source for `safescore.eval.prompts.load_prompts`; with ``mini``
    None means the mini-I2P prompts `safescore.sd.mini.PROMPTS_CSV`),
    ``categories`` / ``hard_only`` / ``deduplicate`` (I2P filters), ``limit`` (first prompts).
    Sampling: ``samplers``, ``seeds`` (seed indices 0..seeds-1; the image seed is
    ``seed_offset + index``, or the prompt's data seed + index with ``data_seeds``),
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
        """The protocol's settings, then (with ``mini=True``) `mini_settings`, then ``options``
        on top (every setting can be overridden)."""
        settings = protocol_settings(protocol)
        if options.get("mini"):
            settings = {**settings, **mini_settings()}
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown EvalConfig field(s): {', '.join(unknown)}")
        return cls(**{**settings, **options, "protocol": protocol})

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
            self.categories = list(self.categories)
        if not (self.tiny or self.mini):
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

    def to_dict(self) -> dict:
        return asdict(self)

    def overrides(self) -> dict:
        """Settings that differ from the protocol's: {field: (protocol's, this run's)}."""
        fixed = protocol_settings(self.protocol)
        mine = self.to_dict()
        return {k: (v, mine[k]) for k, v in fixed.items() if mine[k] != v}


@dataclass(frozen=True)
class WorkItem:
    """One image to make: a prompt row, a seed index and a sampler."""

    prompt_id: str
    prompt: str
    categories: tuple[str, ...]
    sampler: str
    seed_index: int
    seed: int
    guidance_scale: float

    @property
    def key(self) -> str:
        return row_key(self.prompt_id, self.sampler, self.seed)

    @property
    def image_relpath(self) -> str:
        return image_relpath(self.sampler, self.prompt_id, self.seed)


def image_relpath(sampler: str, prompt_id: str, seed: int) -> str:
    """``images/{sampler}/{id}-{hash}_s{seed}.png``: unique per prompt id (``a|b`` ≠ ``a_b``)."""
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in prompt_id)[:80]
    digest = hashlib.sha256(prompt_id.encode("utf-8")).hexdigest()[:10]
    return f"images/{sampler}/{safe_id}-{digest}_s{int(seed)}.png"


def row_key(prompt_id, sampler, seed) -> str:
    return json.dumps([str(prompt_id), str(sampler), int(seed)])


def load_run_prompts(config: EvalConfig):
    from .prompts import load_prompts

    return load_prompts(
        config.prompts,
        categories=config.categories,
        hard_only=config.hard_only,
        deduplicate=config.deduplicate,
        limit=config.limit,
    )


def _missing(value) -> bool:
    """None, NaN or pandas' NA (an empty cell)."""
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _where(row, source: str) -> str:
    line = getattr(row, "line", None)
    return f" ({source}, data row {line})" if line is not None else ""


def work_items(config: EvalConfig, prompts) -> list[WorkItem]:
    """The run's work, in order prompt → seed → sampler (so partial runs compare samplers)."""
    items = []
    for row in prompts.itertuples(index=False):
        for j in range(config.seeds):
            if config.data_seeds:
                if _missing(row.seed):
                    raise ValueError(
                        f"data_seeds: prompt {row.prompt_id}{_where(row, config.prompts)} has no seed in the data "
                        "(empty sd_seed); fill it in, or drop --data-seeds"
                    )
                seed = int(row.seed) + j
            else:
                seed = config.seed_offset + j
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(
                    f"prompt {row.prompt_id}{_where(row, config.prompts)}: seed {seed} is outside [0, 2^63-1]"
                )
            scale = config.guidance_scale
            if config.data_guidance:
                if _missing(row.guidance_scale):
                    raise ValueError(
                        f"data_guidance: prompt {row.prompt_id}{_where(row, config.prompts)} has no guidance "
                        "scale in the data (empty sd_guidance_scale); fill it in, or drop "
                        "--data-guidance"
                    )
                scale = float(row.guidance_scale)
            for sampler in config.samplers:
                items.append(
                    WorkItem(
                        prompt_id=str(row.prompt_id),
                        prompt=str(row.prompt),
                        categories=tuple(row.categories),
                        sampler=sampler,
                        seed_index=j,
                        seed=seed,
                        guidance_scale=float(scale),
                    )
                )
    return items


def prompt_fingerprint(prompts) -> str:
    """sha256 of the selected prompt ids and texts: a changed prompt file changes the run."""
    digest = hashlib.sha256()
    for pid, text in zip(prompts["prompt_id"], prompts["prompt"]):
        digest.update(f"{pid}\t{text}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- the lock


class RunLockedError(OSError):
    """The run directory is locked by another ``evaluate`` (an expected failure)."""


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.evaluate.lock`` naming its holder.

    The holder writes ``{"pid", "host", "started", "command"}`` into the file; a second process
    that cannot take the lock reads it for its error message. The operating system releases the
    lock when the holder's process ends (also on a kill), so a stale file never blocks a run.
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process (it has not written its name yet)"
        return (
            f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}: "
            f"{info.get('command')}"
        )

    def acquire(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by another `safescore evaluate` "
                f"({self.holder()}); wait for it to finish, or choose another --out"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _run_contents(run_dir: Path) -> list[str]:
    """Entries of a folder that would belong to a run (hidden lock/temp files left out)."""
    return sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))


def check_or_save_config(run_dir: Path, saved: dict) -> None:
    """Save ``saved`` as ``config.json``, or refuse if the directory holds another configuration.

    A folder without ``config.json`` must be empty (rows there cannot be matched to a
    configuration, so they are never adopted).
    """
    path = run_dir / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{path} is not valid JSON ({exc}); remove it or use a new --out"
            ) from None
        if old != saved:
            diffs = [
                f"{k}: {old.get(k)!r} -> {saved.get(k)!r}"
                for k in sorted(set(old) | set(saved))
                if old.get(k) != saved.get(k)
            ]
            raise ValueError(
                f"{run_dir} holds a run with a different configuration ({'; '.join(diffs)}); "
                "rerun with the saved options to resume, or choose a new --out directory"
            )
        return
    contents = _run_contents(run_dir)
    if contents:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise ValueError(
            f"--out {run_dir} is not empty ({shown}) and has no {CONFIG_FILE}, so it is not a "
            "run directory (results there cannot be matched to a configuration and are never "
            "adopted); choose an empty or new folder"
        )
    _write_atomic(path, json.dumps(saved, indent=2, sort_keys=True) + "\n")


def result_files(run_dir: Path) -> list[Path]:
    """``results.jsonl`` then the shards ``results.rank*.jsonl`` (sorted)."""
    run_dir = Path(run_dir)
    files = [run_dir / RESULTS_FILE] if (run_dir / RESULTS_FILE).is_file() else []
    return files + sorted(run_dir.glob("results.rank*.jsonl"))


def parse_row(line: bytes | str):
    """A results row (dict with prompt_id, sampler, seed) from one line, or None if it is not."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(row, dict) or any(k not in row for k in ROW_KEYS):
        return None
    if isinstance(row["seed"], bool) or not isinstance(row["seed"], int):
        return None
    return row


def is_failed(row: dict) -> bool:
    return row.get("status") == "failed"


def read_rows(run_dir: Path) -> list[dict]:
    """Every row of a run, merged over the results files, one per key.

    Per key the first successful row wins; a key with only failed rows keeps its last one.
    A last line without its newline that does not parse (a process killed while writing) is
    skipped with a warning; a malformed line anywhere else is a ValueError naming file and line.
    """
    rows: dict[str, dict] = {}
    for path in result_files(run_dir):
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = parse_row(line)
            if row is None:
                if number == len(lines):  # last line without newline: cut off by a kill
                    warnings.warn(f"{path}: ignoring a truncated last line", stacklevel=2)
                    continue
                raise ValueError(
                    f"{path}, line {number}: not a results row (a JSON object with "
                    f"{', '.join(ROW_KEYS)}); fix or remove that line"
                )
            key = row_key(row["prompt_id"], row["sampler"], row["seed"])
            old = rows.get(key)
            if old is None or is_failed(old):
                rows[key] = row
    return list(rows.values())


def _open_for_append(path: Path):
    """Open a results file for appending. A last line without its newline is completed if it is
    a whole row, and cut off if it is torn (a killed write)."""
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            if parse_row(data[cut:]) is not None:
                with path.open("ab") as handle:
                    handle.write(b"\n")
            else:
                with path.open("r+b") as handle:
                    handle.truncate(cut)
    return path.open("a", encoding="utf-8")


def _append_row(handle, row: dict) -> None:
    handle.write(json.dumps(row, sort_keys=True) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def merge_shards(run_dir: Path) -> int:
    """Merge every results file into ``results.jsonl`` (atomic) and delete the shards.

    Returns the number of rows. Safe to repeat: rows are de-duplicated by key.
    """
    run_dir = Path(run_dir)
    shards = sorted(run_dir.glob("results.rank*.jsonl"))
    rows = read_rows(run_dir)
    if shards:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        tmp = run_dir / f".{RESULTS_FILE}.merge.tmp"
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, run_dir / RESULTS_FILE)
        for shard in shards:
            shard.unlink()
    return len(rows)


# --------------------------------------------------------------------------- scorers


def build_scorers(config: EvalConfig, *, device, dtype=None):
    """The `safescore.eval.scorers.ScoreSuite` of the configuration.

    The CLIP scorers use ``config.scorer_clip`` (never the guidance encoder). With ``tiny`` they
    use `safescore.sd.tiny.tiny_clip` (seed 1: not the guidance CLIP), with ``mini`` the trained
    mini CLIP (`safescore.sd.mini.load_clip`: coherence of a digit with its prompt is real); in
    both, Q16 embeddings and the aesthetic MLP are random of the CLIP's width (RANDOM weights).
    ``digit`` (mini only) is `safescore.eval.scorers.DigitScorer`. NudeNet is the real one.
    """
    import numpy as np
    import torch

    from ..sd.hub import load_clip
    from . import scorers as sc

    suite = []
    embedder = None
    random_scorers = config.tiny or config.mini
    if set(config.scorers) & {"q16", "clip", "aesthetic"}:
        if config.mini:
            from ..sd import mini

            clip_model, processor = mini.load_clip(dtype=dtype)
            tokenizer = processor.tokenizer
        elif random_scorers:
            from ..sd.tiny import tiny_clip

            clip_model, tokenizer = tiny_clip(seed=1)
        else:
            clip_model, tokenizer = load_clip(config.scorer_clip, dtype=dtype)
        embedder = sc.CLIPEmbedder(clip_model.to(device), tokenizer, device=device)
    for name in config.scorers:
        if name == "nudenet":
            suite.append(sc.NudeNetScorer(threshold=config.nudenet_threshold))
        elif name == "q16":
            if random_scorers:
                g = np.random.default_rng(0)
                emb = g.standard_normal((2, embedder.embed_dim)).astype(np.float32)
            else:
                emb = config.q16_embeddings
            suite.append(sc.Q16Scorer(embedder, emb))
        elif name == "clip":
            suite.append(sc.CLIPCoherenceScorer(embedder))
        elif name == "aesthetic":
            if random_scorers:
                torch.manual_seed(0)
                mlp = sc.AestheticMLP(embedder.embed_dim)
            else:
                mlp = config.aesthetic_weights
            suite.append(sc.AestheticScorer(embedder, mlp))
        elif name == "digit":
            from ..sd import mini

            suite.append(sc.DigitScorer(mini.digit_classifier()))
    return sc.ScoreSuite(suite)


# --------------------------------------------------------------------------- the run


@dataclass
class ProcessInfo:
    """This process' place in a (possibly sharded) run."""

    index: int = 0
    count: int = 1
    device: str = "cpu"
    _state: object = None

    def barrier(self):
        if self._state is not None and self.count > 1:
            self._state.wait_for_everyone()


def process_info(device: str | None = None) -> ProcessInfo:
    """Rank and world size from Accelerate (``accelerate launch``); one process otherwise.

    ``device=None`` takes Accelerate's device for this process (its own GPU under multi-GPU).
    """
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 or "ACCELERATE_MIXED_PRECISION" in os.environ:
        from accelerate import PartialState

        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        state = PartialState(cpu=use_cpu or not torch.cuda.is_available())
        if state.num_processes != world_size:
            raise ValueError(
                f"WORLD_SIZE is {world_size} but Accelerate set up {state.num_processes} "
                "process(es); refusing to run, each process would redo all the work"
            )
        return ProcessInfo(
            state.process_index, state.num_processes, device or str(state.device), state
        )

    return ProcessInfo(0, 1, device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


#: Per-image failures recorded as failed rows (the run goes on); anything else stops the run.
def _image_failures() -> tuple[type[BaseException], ...]:
    import torch

    return (FloatingPointError, torch.OutOfMemoryError)


def batches(items, batch_size: int):
    """Pack work items into batches of one sampler and one guidance scale, in encounter order."""
    open_batches: dict = {}
    for item in items:
        key = (item.sampler, item.guidance_scale)
        batch = open_batches.setdefault(key, [])
        batch.append(item)
        if len(batch) == batch_size:
            yield open_batches.pop(key)
    yield from open_batches.values()


def _failed_row(item: WorkItem, exc: BaseException) -> dict:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "image_path": None}


def run_evaluation(
    config: EvalConfig,
    out: str | os.PathLike,
    *,
    device: str | None = None,
    dtype=None,
    progress: bool = True,
    process: ProcessInfo | None = None,
    batch_size: int = 1,
    retry_failed: bool = False,
) -> dict:
    """Run (or resume) an evaluation into ``out``; returns a summary dict.

    Args:
        config: the run's `EvalConfig`.
        out: the run directory (created if missing; locked while the run writes to it).
        device: torch device for generation and scoring (None: Accelerate's / cuda if available).
        dtype: model dtype (default float32; float16 is the usual choice on a GPU).
        progress: show a tqdm progress bar with ETA.
        process: rank/world size (default: from Accelerate's environment).
        batch_size: images per pipeline call (one sampler and guidance scale per batch; every
            image keeps its own generator, so its initial noise does not depend on the batch).
        retry_failed: make the images of failed rows again.
    """
    import torch
    from tqdm.auto import tqdm

    from .samplers import SamplerContext, sampler_factory

    _whole("batch_size", batch_size)
    dtype = dtype or torch.float32
    process = process or process_info(device)
    run_dir = Path(out)
    prompts = load_run_prompts(config)
    items = work_items(config, prompts)
    saved = dict(config.to_dict(), prompt_fingerprint=prompt_fingerprint(prompts))
    lock = None
    if process.index == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
    try:
        if process.index == 0:
            check_or_save_config(run_dir, saved)
        # The others wait until process 0 holds the lock and wrote the configuration; if it
        # refused, the launcher stops the group before they write anything.
        process.barrier()
        if process.index != 0:
            check_or_save_config(run_dir, saved)
        summary = _run_locked(
            config, run_dir, items, process, dtype, progress, batch_size, retry_failed,
            SamplerContext, sampler_factory, tqdm,
        )  # fmt: skip
    finally:
        if lock is not None:
            lock.release()
    return summary


def _run_locked(
    config, run_dir, items, process, dtype, progress, batch_size, retry_failed,
    SamplerContext, sampler_factory, tqdm,
):  # fmt: skip
    rows = read_rows(run_dir)
    done = {
        row_key(r["prompt_id"], r["sampler"], r["seed"])
        for r in rows
        if not (retry_failed and is_failed(r))
    }
    mine = items[process.index :: process.count]
    todo = [item for item in mine if item.key not in done]
    shard = RESULTS_FILE if process.count == 1 else f"results.rank{process.index}.jsonl"
    summary = {
        "run_dir": str(run_dir),
        "items": len(items),
        "process": process.index,
        "processes": process.count,
        "skipped": len(mine) - len(todo),
        "generated": 0,
        "failed": 0,
    }
    if todo:
        suite = build_scorers(config, device=process.device, dtype=dtype)
        context = SamplerContext.from_config(config, device=process.device, dtype=dtype)
        context.check_image_size(batch_size)
        if config.tiny and process.index == 0:
            _log(f"*** {RANDOM_WEIGHTS_NOTE} ***")
        generators = {}
        bar = tqdm(
            total=len(mine),
            initial=len(mine) - len(todo),
            desc="evaluate" if process.count == 1 else f"evaluate [{process.index}]",
            position=process.index,
            disable=not progress,
            unit="img",
            dynamic_ncols=True,
        )
        with _open_for_append(run_dir / shard) as handle:
            for batch in batches(todo, batch_size):
                sampler = batch[0].sampler
                if sampler not in generators:
                    generators[sampler] = sampler_factory(sampler)(context)
                start = time.perf_counter()
                results = _generate(generators[sampler], batch)
                seconds = (time.perf_counter() - start) / len(batch)
                good = [(it, g) for it, g in zip(batch, results) if not isinstance(g, Exception)]
                for item, generated in good:
                    image_path = run_dir / item.image_relpath
                    image_path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = image_path.with_name(f".{image_path.stem}.tmp.png")
                    generated.image.save(tmp, format="PNG")
                    os.replace(tmp, image_path)
                start = time.perf_counter()
                scores = iter(
                    suite.score([g.image for _, g in good], prompts=[it.prompt for it, _ in good])
                    if good and suite.scorers
                    else [{} for _ in good]
                )
                score_seconds = (time.perf_counter() - start) / max(len(good), 1)
                for item, generated in zip(batch, results):
                    row = {
                        "prompt_id": item.prompt_id,
                        "prompt": item.prompt,
                        "categories": list(item.categories),
                        "sampler": item.sampler,
                        "seed_index": item.seed_index,
                        "seed": item.seed,
                        "guidance_scale": item.guidance_scale,
                        "scheduler": context.scheduler_of(item.sampler),
                        "batch_size": len(batch),
                        "process": process.index,
                    }
                    if isinstance(generated, Exception):
                        row.update(_failed_row(item, generated))
                        summary["failed"] += 1
                    else:
                        row.update(
                            status="ok",
                            image_path=item.image_relpath,
                            **next(scores),
                            **generated.summary(),
                            seconds=round(seconds, 4),
                            score_seconds=round(score_seconds, 4),
                        )
                        summary["generated"] += 1
                    _append_row(handle, row)
                    bar.update(1)
        bar.close()
    process.barrier()
    if process.index == 0:
        summary["rows"] = merge_shards(run_dir) if process.count > 1 else len(read_rows(run_dir))
        if config.tiny:
            _log(f"*** {RANDOM_WEIGHTS_NOTE} ***")
    process.barrier()
    return summary


def _generate(generate, batch: list[WorkItem]) -> list:
    """Generated images of a batch (or the exception of each image that failed)."""
    failures = _image_failures()
    prompts = [it.prompt for it in batch]
    seeds = [it.seed for it in batch]
    scale = batch[0].guidance_scale
    try:
        if len(batch) > 1 and hasattr(generate, "batch"):
            return list(generate.batch(prompts, seeds, scale))
        if len(batch) == 1:
            return [generate(prompts[0], seeds[0], scale)]
    except failures as exc:
        if len(batch) == 1:
            return [exc]
    # A sampler without batching, or a batch that failed: one image at a time.
    out = []
    for prompt, seed in zip(prompts, seeds):
        try:
            out.append(generate(prompt, seed, scale))
        except failures as exc:
            out.append(exc)
    return out


def expected_keys(config: EvalConfig) -> set[str]:
    """Keys of every row a complete run of ``config`` has."""
    return {item.key for item in work_items(config, load_run_prompts(config))}


def missing_keys(run_dir, config: EvalConfig) -> Iterable[str]:
    have = {row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in read_rows(Path(run_dir))}
    return sorted(expected_keys(config) - have)
