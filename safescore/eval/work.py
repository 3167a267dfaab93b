"""The work of a run: one `WorkItem` per prompt × seed × sampler, and its row key and image path."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .run_config import MAX_SEED, EvalConfig


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


def expected_keys(config: EvalConfig) -> set[str]:
    """Keys of every row a complete run of ``config`` has."""
    return {item.key for item in work_items(config, load_run_prompts(config))}
