"""Automatic checks for the notebooks' exercises, one module per notebook.

Every ``check_*(fn)`` calls the student's ``fn`` on seeded inputs and compares the result with a
reference: the library (``safescore.predict_x0``, ``ddim_sample``, ``SafeGuidance``, ...) or a
closed form. On a wrong answer it raises an ``AssertionError`` whose message starts with
``Hint:`` and names the likely mistake, found by comparing the answer with known-wrong variants
(a flipped sign of γ, ᾱ instead of √ᾱ, a forgotten per-sample mask, ε recomputed from the
corrected x̂0, a missing ``detach``...). A stub that still raises ``NotImplementedError`` fails
with a hint too. On success it prints one line starting with ``✓``.

The inputs are chosen to separate the variants the exercise text warns about (far-away points
for an underflow, exact ties, values on a threshold, cosines below the clamp, logits that
overflow a naive formula). The checks are cheap (well under a second each) and self-contained:
an exercise can be checked without running the rest of its notebook. The notebooks call them as
``checks.check_NAME(fn)`` after ``from safescore.course import checks``.

Modules: :mod:`.hints` (the shared hint machinery), :mod:`.nb01` … :mod:`.nb08` (the checks of
notebooks 01 … 08).
"""

from __future__ import annotations

from .nb01 import check_dsm_loss, check_gmm_score, check_langevin_step
from .nb02 import check_ddim_loop, check_ddim_step, check_tweedie
from .nb03 import check_cdtc_step, check_classifier_guided_eps, check_negative_guidance_eps
from .nb04 import check_choose_setting, check_harm_rate_ci, check_safe_ddim_loop
from .nb05 import check_latent_cdtc_step, check_log_odds, check_off_manifold_distance
from .nb06 import check_clip_cosine, check_info_nce, check_topk_log_prob
from .nb07 import check_cfg_eps, check_latent_x0_step
from .nb08 import check_i2p_inappropriate, check_prompt_bootstrap_ci

__all__ = [
    "check_gmm_score",
    "check_dsm_loss",
    "check_langevin_step",
    "check_tweedie",
    "check_ddim_step",
    "check_ddim_loop",
    "check_classifier_guided_eps",
    "check_negative_guidance_eps",
    "check_cdtc_step",
    "check_safe_ddim_loop",
    "check_choose_setting",
    "check_harm_rate_ci",
    "check_off_manifold_distance",
    "check_latent_cdtc_step",
    "check_log_odds",
    "check_clip_cosine",
    "check_topk_log_prob",
    "check_info_nce",
    "check_cfg_eps",
    "check_latent_x0_step",
    "check_i2p_inappropriate",
    "check_prompt_bootstrap_ci",
]
