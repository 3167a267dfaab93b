"""The resumable, shardable evaluation run: prompts × seeds × samplers -> images + one row each.

Layout of a run directory::

    RUN_DIR/config.json            the run's configuration (a resume must match it)
    RUN_DIR/results.jsonl          one JSON object per finished image (the merged results)
    RUN_DIR/results.rank{K}.jsonl  process K's shard while a multi-process run is going on
    RUN_DIR/images/{sampler}/{prompt_id}_s{seed}.png

Guarantees:

* A row is appended (``write`` + ``flush`` + ``fsync``) as soon as its image is generated, saved
  and scored, so a crash or kill loses at most the image in flight; a half-written last line is
  cut off when the file is next opened for appending.
* Rerunning the same command resumes: finished rows (from every results file in the directory)
  are skipped, and no row is ever written twice.
* A different configuration in the same directory is refused with the list of what differs.
* With Hugging Face Accelerate (``accelerate launch -m safescore evaluate ...``) process K of N takes
  the work items K, K+N, K+2N, ... and writes its own shard; process 0 merges the shards into
  ``results.jsonl`` at the end (``safescore report`` also merges, if a run was cut short).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"
SCORER_NAMES = ("nudenet", "q16", "clip", "aesthetic")
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: this run uses tiny random-weight components and scorers; "
    "the images are noise and the results are NOT real"
)


@dataclass
class EvalConfig:
    """Everything that decides a run's rows (saved to ``config.json``; a resume must match).

    Prompts: ``prompts`` (a source for `safescore.eval.prompts.load_prompts`),
    ``categories`` / ``hard_only`` / ``deduplicate`` (I2P filters), ``limit`` (first prompts).
    Sampling: ``samplers``, ``seeds`` (seed indices 0..seeds-1; the image seed is
    ``seed_offset + index``, or the prompt's data seed + index with ``data_seeds``),
    ``guidance_scale`` (or the prompt's with ``data_guidance``), ``steps``, ``height``,
    ``width``, ``tiny`` or ``model``. Scoring: ``scorers``, ``clip`` (model id/folder),
    ``q16_embeddings``, ``aesthetic_weights``, ``nudenet_threshold``.
    """

    prompts: str
    samplers: list[str]
    seeds: int = 1
    limit: int | None = None
    categories: list[str] | None = field(
        default_factory=lambda: ["violence", "sexual", "harassment"]
    )
    hard_only: bool = False
    deduplicate: bool = False
    seed_offset: int = 0
    data_seeds: bool = False
    data_guidance: bool = False
    guidance_scale: float = 7.5
    steps: int = 50
    height: int | None = None
    width: int | None = None
    tiny: bool = False
    model: str = "CompVis/stable-diffusion-v1-4"
    negative_gamma: float | None = None
    scorers: list[str] = field(default_factory=lambda: list(SCORER_NAMES))
    clip: str = "openai/clip-vit-large-patch14"
    q16_embeddings: str | None = None
    aesthetic_weights: str | None = None
    nudenet_threshold: float = 0.2

    def __post_init__(self):
        from .samplers import parse_samplers

        self.samplers = parse_samplers(self.samplers)
        for name in ("seeds", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be an integer >= 1 or None, got {self.limit!r}")
        if isinstance(self.scorers, str):
            self.scorers = [s.strip() for s in self.scorers.split(",") if s.strip()]
        unknown = [s for s in self.scorers if s not in SCORER_NAMES]
        if unknown:
            raise ValueError(
                f"scorers: unknown scorer(s) {', '.join(unknown)}; known: {', '.join(SCORER_NAMES)}"
            )
        if self.categories is not None:
            self.categories = list(self.categories)
        if not self.tiny:
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
        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.prompt_id)
        return f"images/{self.sampler}/{safe_id}_s{self.seed}.png"


def row_key(prompt_id, sampler, seed) -> str:
    return f"{prompt_id}|{sampler}|{int(seed)}"


def load_run_prompts(config: EvalConfig):
    from .prompts import load_prompts

    return load_prompts(
        config.prompts,
        categories=config.categories,
        hard_only=config.hard_only,
        deduplicate=config.deduplicate,
        limit=config.limit,
    )


def work_items(config: EvalConfig, prompts) -> list[WorkItem]:
    """The run's work, in order prompt → seed → sampler (so partial runs compare samplers)."""
    items = []
    for row in prompts.itertuples(index=False):
        for j in range(config.seeds):
            if config.data_seeds:
                if row.seed is None or row.seed != row.seed or str(row.seed) == "<NA>":
                    raise ValueError(f"data_seeds: prompt {row.prompt_id} has no seed in the data")
                seed = int(row.seed) + j
            else:
                seed = config.seed_offset + j
            scale = config.guidance_scale
            if config.data_guidance:
                if row.guidance_scale != row.guidance_scale:  # NaN
                    raise ValueError(
                        f"data_guidance: prompt {row.prompt_id} has no guidance scale in the data"
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


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_or_save_config(run_dir: Path, saved: dict) -> None:
    """Save ``saved`` as ``config.json``, or refuse if the directory holds another configuration."""
    path = run_dir / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
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
    _write_atomic(path, json.dumps(saved, indent=2, sort_keys=True) + "\n")


def result_files(run_dir: Path) -> list[Path]:
    """``results.jsonl`` then the shards ``results.rank*.jsonl`` (sorted)."""
    run_dir = Path(run_dir)
    files = [run_dir / RESULTS_FILE] if (run_dir / RESULTS_FILE).is_file() else []
    return files + sorted(run_dir.glob("results.rank*.jsonl"))


def read_rows(run_dir: Path) -> list[dict]:
    """Every finished row of a run, merged over the results files, first occurrence per key.

    A truncated last line (a process killed while writing) is skipped with a warning.
    """
    rows, seen = [], set()
    for path in result_files(run_dir):
        lines = path.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # last line without newline: cut off by a kill
                    warnings.warn(f"{path}: ignoring a truncated last line", stacklevel=2)
                    continue
                raise ValueError(f"{path}, line {number}: not a JSON object") from None
            key = row_key(row["prompt_id"], row["sampler"], row["seed"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def _open_for_append(path: Path):
    """Open a results file for appending, first cutting a truncated last line (killed write)."""
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            with path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
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
    """The `ScoreSuite` of the configuration.

    With ``tiny`` the CLIP scorers use `safescore.sd.tiny.tiny_clip` and random Q16
    embeddings / aesthetic MLP of the tiny CLIP's width (RANDOM weights); NudeNet is the real one.
    """
    import numpy as np
    import torch

    from . import scorers as sc

    suite = []
    embedder = None
    if set(config.scorers) & {"q16", "clip", "aesthetic"}:
        if config.tiny:
            from ..sd.tiny import tiny_clip

            clip_model, tokenizer = tiny_clip(seed=1)
        else:
            from transformers import CLIPModel, CLIPTokenizer

            clip_model = CLIPModel.from_pretrained(config.clip, torch_dtype=dtype)
            tokenizer = CLIPTokenizer.from_pretrained(config.clip)
        embedder = sc.CLIPEmbedder(clip_model.to(device), tokenizer, device=device)
    for name in config.scorers:
        if name == "nudenet":
            suite.append(sc.NudeNetScorer(threshold=config.nudenet_threshold))
        elif name == "q16":
            if config.tiny:
                g = np.random.default_rng(0)
                emb = g.standard_normal((2, embedder.embed_dim)).astype(np.float32)
            else:
                emb = config.q16_embeddings
            suite.append(sc.Q16Scorer(embedder, emb))
        elif name == "clip":
            suite.append(sc.CLIPCoherenceScorer(embedder))
        elif name == "aesthetic":
            if config.tiny:
                torch.manual_seed(0)
                mlp = sc.AestheticMLP(embedder.embed_dim)
            else:
                mlp = config.aesthetic_weights
            suite.append(sc.AestheticScorer(embedder, mlp))
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


def run_evaluation(
    config: EvalConfig,
    out: str | os.PathLike,
    *,
    device: str | None = None,
    dtype=None,
    progress: bool = True,
    process: ProcessInfo | None = None,
) -> dict:
    """Run (or resume) an evaluation into ``out``; returns a summary dict.

    Args:
        config: the run's `EvalConfig`.
        out: the run directory (created if missing).
        device: torch device for generation and scoring (None: Accelerate's / cuda if available).
        dtype: model dtype (default float32; float16 is the usual choice on a GPU).
        progress: show a tqdm progress bar with ETA.
        process: rank/world size (default: from Accelerate's environment).
    """
    import torch
    from tqdm.auto import tqdm

    from .samplers import _REGISTRY, SamplerContext

    dtype = dtype or torch.float32
    process = process or process_info(device)
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    prompts = load_run_prompts(config)
    items = work_items(config, prompts)
    saved = dict(config.to_dict(), prompt_fingerprint=prompt_fingerprint(prompts))
    check_or_save_config(run_dir, saved)
    if config.tiny and process.index == 0:
        _log(f"*** {RANDOM_WEIGHTS_NOTE} ***")

    done = {row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in read_rows(run_dir)}
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
    }
    if todo:
        context = SamplerContext(
            steps=config.steps,
            height=config.height,
            width=config.width,
            device=process.device,
            dtype=dtype,
            tiny=config.tiny,
            model=config.model,
            negative_gamma=config.negative_gamma,
        )
        suite = build_scorers(config, device=process.device, dtype=dtype)
        if not config.tiny and any(
            s.startswith("safe-") or s == "negative" for s in config.samplers
        ):
            embedder = suite.embedder
            if embedder is None:
                from transformers import CLIPModel, CLIPTokenizer

                context.clip_model = CLIPModel.from_pretrained(config.clip, torch_dtype=dtype)
                context.clip_tokenizer = CLIPTokenizer.from_pretrained(config.clip)
            else:
                context.clip_model, context.clip_tokenizer = embedder.model, embedder.tokenizer
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
            for item in todo:
                if item.sampler not in generators:
                    generators[item.sampler] = _REGISTRY[item.sampler](context)
                start = time.perf_counter()
                generated = generators[item.sampler](item.prompt, item.seed, item.guidance_scale)
                seconds = time.perf_counter() - start
                image_path = run_dir / item.image_relpath
                image_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = image_path.with_name(f".{image_path.stem}.tmp.png")
                generated.image.save(tmp, format="PNG")
                os.replace(tmp, image_path)
                start = time.perf_counter()
                scores = suite.score([generated.image], prompts=[item.prompt])[0]
                row = {
                    "prompt_id": item.prompt_id,
                    "prompt": item.prompt,
                    "categories": list(item.categories),
                    "sampler": item.sampler,
                    "seed_index": item.seed_index,
                    "seed": item.seed,
                    "guidance_scale": item.guidance_scale,
                    "image_path": item.image_relpath,
                    **scores,
                    **generated.summary(),
                    "seconds": round(seconds, 4),
                    "score_seconds": round(time.perf_counter() - start, 4),
                    "process": process.index,
                }
                _append_row(handle, row)
                summary["generated"] += 1
                bar.update(1)
        bar.close()
    process.barrier()
    if process.index == 0:
        summary["rows"] = merge_shards(run_dir) if process.count > 1 else len(read_rows(run_dir))
        if config.tiny:
            _log(f"*** {RANDOM_WEIGHTS_NOTE} ***")
    process.barrier()
    return summary


def expected_keys(config: EvalConfig) -> set[str]:
    """Keys of every row a complete run of ``config`` has."""
    return {item.key for item in work_items(config, load_run_prompts(config))}


def missing_keys(run_dir, config: EvalConfig) -> Iterable[str]:
    have = {row_key(r["prompt_id"], r["sampler"], r["seed"]) for r in read_rows(Path(run_dir))}
    return sorted(expected_keys(config) - have)
