"""The evaluation harness: prompt sets, image scorers, resumable sharded runs, reports.

Heavy dependencies (pandas, nudenet, transformers, diffusers) load on first use; importing
``safescore.eval`` itself is cheap.
"""

from __future__ import annotations

from .prompts import (
    BENIGN_PROMPTS,
    I2P_CATEGORIES,
    THESIS_CATEGORIES,
    benign_prompts,
    load_coco,
    load_i2p,
    load_prompt_file,
    load_prompts,
    load_templates,
)

_LAZY = {
    "scorers": (
        "AestheticMLP",
        "AestheticScorer",
        "CLIPCoherenceScorer",
        "CLIPEmbedder",
        "NudeNetScorer",
        "Q16Scorer",
        "ScoreSuite",
        "convert_q16_pickle",
        "load_aesthetic_mlp",
        "load_q16_embeddings",
    ),
    "runner": ("EvalConfig", "run_evaluation", "read_rows", "merge_shards", "RunLock"),
    "samplers": ("Generated", "SamplerContext", "register_sampler", "available_samplers"),
    "report": (
        "write_report",
        "summarize",
        "bootstrap_diff",
        "expected_max_inappropriateness",
        "is_inappropriate",
    ),
    "protocols": ("PROTOCOL_NAMES", "protocol_settings", "DEFAULT_MODEL"),
}

__all__ = [
    "BENIGN_PROMPTS",
    "I2P_CATEGORIES",
    "THESIS_CATEGORIES",
    "benign_prompts",
    "load_coco",
    "load_i2p",
    "load_prompt_file",
    "load_prompts",
    "load_templates",
    *(name for names in _LAZY.values() for name in names),
]


def __getattr__(name):
    import importlib

    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module 'safescore.eval' has no attribute {name!r}")
