"""The scorers of a configuration: `build_scorers` (`safescore.eval.scorers.ScoreSuite`)."""

from __future__ import annotations

from .run_config import EvalConfig


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
