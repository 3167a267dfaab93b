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

The run's parts live in their own modules (every name stays importable from here):
`safescore.eval.run_config` (`EvalConfig`), `safescore.eval.work` (work items, row keys, image
paths), `safescore.eval.rundir` (lock, config.json, rows, shards), `safescore.eval.suite`
(`build_scorers`), `safescore.eval.processes` (rank and world size). This module is the
generation loop: `run_evaluation`.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

from .processes import ProcessInfo, process_info
from .run_config import (
    DEFAULT_SCORERS,
    MAX_SEED,
    RANDOM_WEIGHTS_NOTE,
    SCORER_NAMES,
    EvalConfig,
    _whole,
    mini_settings,
)
from .rundir import (
    CONFIG_FILE,
    LOCK_FILE,
    RESULTS_FILE,
    ROW_KEYS,
    RunLock,
    RunLockedError,
    append_row,
    check_or_save_config,
    is_failed,
    merge_shards,
    missing_keys,
    open_for_append,
    parse_row,
    read_config,
    read_rows,
    result_files,
    row_problem,
)
from .suite import build_scorers
from .work import (
    WorkItem,
    expected_keys,
    image_relpath,
    load_run_prompts,
    prompt_fingerprint,
    row_key,
    work_items,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_SCORERS",
    "LOCK_FILE",
    "MAX_SEED",
    "RANDOM_WEIGHTS_NOTE",
    "RESULTS_FILE",
    "ROW_KEYS",
    "SCORER_NAMES",
    "EvalConfig",
    "ProcessInfo",
    "RunLock",
    "RunLockedError",
    "WorkItem",
    "batches",
    "build_scorers",
    "check_or_save_config",
    "read_config",
    "row_problem",
    "expected_keys",
    "image_relpath",
    "is_failed",
    "load_run_prompts",
    "merge_shards",
    "mini_settings",
    "missing_keys",
    "parse_row",
    "process_info",
    "prompt_fingerprint",
    "read_rows",
    "result_files",
    "row_key",
    "run_evaluation",
    "work_items",
]


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
    mine = items[process.index :: process.count]
    largest = max(Counter((it.sampler, it.guidance_scale) for it in mine).values(), default=0)
    if batch_size > largest:
        raise ValueError(
            f"--batch-size {batch_size} is larger than the {largest} image(s) one batch can hold "
            f"in this run (a batch has one sampler and one guidance scale); give at most {largest}"
        )
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
        with open_for_append(run_dir / shard) as handle:
            for batch in batches(todo, batch_size):
                sampler = batch[0].sampler
                if sampler not in generators:
                    generators[sampler] = sampler_factory(sampler)(context)
                start = time.perf_counter()
                results = _generate(generators[sampler], batch, noise=config.noise)
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
                    append_row(handle, row)
                    bar.update(1)
        bar.close()
    process.barrier()
    if process.index == 0:
        summary["rows"] = merge_shards(run_dir) if process.count > 1 else len(read_rows(run_dir))
        if config.tiny:
            _log(f"*** {RANDOM_WEIGHTS_NOTE} ***")
    process.barrier()
    return summary


def _generate(generate, batch: list[WorkItem], *, noise: str = "per-image") -> list:
    """Generated images of a batch (or the exception of each image that failed).

    ``noise="i2p"``: image j of a prompt is made from ONE generator seeded with the prompt's
    first seed (``seed - seed_index``), its j-th image in batches of 5 (the I2P benchmark's
    ``eval_I2P.py``; `safescore.eval.samplers.SamplerContext.initial_latents`), so the sampler
    gets the generator seed and the index."""
    failures = _image_failures()
    prompts = [it.prompt for it in batch]
    scale = batch[0].guidance_scale
    if noise == "i2p":
        seeds = [it.seed - it.seed_index for it in batch]
        extra = [{"index": it.seed_index} for it in batch]
        batch_extra = {"indices": [it.seed_index for it in batch]}
    else:
        seeds = [it.seed for it in batch]
        extra = [{} for _ in batch]
        batch_extra = {}
    try:
        if len(batch) > 1 and hasattr(generate, "batch"):
            return list(generate.batch(prompts, seeds, scale, **batch_extra))
        if len(batch) == 1:
            return [generate(prompts[0], seeds[0], scale, **extra[0])]
    except failures as exc:
        if len(batch) == 1:
            return [exc]
    # A sampler without batching, or a batch that failed: one image at a time.
    out = []
    for prompt, seed, kwargs in zip(prompts, seeds, extra):
        try:
            out.append(generate(prompt, seed, scale, **kwargs))
        except failures as exc:
            out.append(exc)
    return out
