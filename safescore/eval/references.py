"""Published numbers printed beside ours in ``report.md``, always labelled as references.

Sources (method.md): the thesis' table (C. Carvajal Reyes, "Safe Sampling for Score-based
Models", 2024; about 10 images per I2P prompt of violence, sexual, harassment), shown under
``--protocol thesis`` only, and the I2P benchmark's README table (ml-research/i2p: SD 1.4 and
Safe Latent Diffusion, Schramowski et al. 2023; NudeNet v2 OR Q16, 10 images per prompt), shown
under ``--protocol sld`` only. These are NOT results of this run.
"""

from __future__ import annotations

#: The thesis' table: metric -> {column: value}; columns map to our samplers below.
THESIS_TABLE = {
    "NudeNet any detected (I2P, %)": {"SD": 15.93, "Single": 8.52, "SD-filter": 6.64, "Multi": 5.26},
    "NudeNet female breast (I2P, %)": {"SD": 11.10, "Single": 5.40, "SD-filter": 4.44, "Multi": 3.27},
    "Q16 mean probability (I2P)": {"SD": 0.35, "Single": 0.309, "SD-filter": 0.386, "Multi": 0.322},
    "Q16 detected (I2P, %)": {"SD": 30.82, "Single": 26.61, "SD-filter": 35.87, "Multi": 27.93},
    "CLIP coherence (COCO)": {"SD": 0.320, "Single": 0.319, "SD-filter": 0.313, "Multi": 0.317},
    "Aesthetic (COCO)": {"SD": 5.076, "Single": 5.069, "SD-filter": 4.948, "Multi": 5.001},
    "CLIP coherence (I2P)": {"SD": 0.314, "Single": 0.286, "SD-filter": 0.286, "Multi": 0.293},
}  # fmt: skip
#: Our metric column of each thesis row (None: not comparable from one run's columns).
THESIS_COLUMNS = {
    "NudeNet any detected (I2P, %)": "nudenet_any",
    "NudeNet female breast (I2P, %)": "nudenet_female_breast",
    "Q16 mean probability (I2P)": "q16_prob",
    "Q16 detected (I2P, %)": "q16_detected",
    "CLIP coherence (COCO)": None,
    "Aesthetic (COCO)": None,
    "CLIP coherence (I2P)": "clip_coherence",
}
#: Thesis column of each of our samplers.
THESIS_SAMPLERS = {"plain": "SD", "safe-single": "Single", "safe-sd-filter": "SD-filter",
                   "safe-multi": "Multi"}  # fmt: skip

#: The I2P benchmark's own table (ml-research/i2p, README.md, "Category: sexual" and
#: "Category: all"): category -> {our sampler: (row label, inappropriate probability %,
#: expected maximum inappropriateness %, its std %)}. Measured with the repository's
#: eval_I2P.py: SD 1.4 at diffusers' defaults (PNDM, 50 steps, CFG 7.5), 10 images per prompt
#: (one generator seeded with sd_seed, two batches of 5), NudeNet v2 (0.6) OR Q16. The
#: "Safe SD 1.4" rows are SLD (arXiv 2211.05105); rows marked "todo run" there are left out.
SLD_I2P_README = {
    "sexual": {
        "plain": ("SD 1.4", 28.5392, 86.5960, 11.5085),
        "sld-medium": ("Safe SD 1.4 (medium)", 14.9731, 71.7280, 17.2618),
        "sld-strong": ("Safe SD 1.4 (strong)", 4.8335, 39.3735, 17.5645),
        "sld-max": ("Safe SD 1.4 (max)", 1.6219, 17.2658, 9.3218),
    },
    "all": {
        "plain": ("SD 1.4", 37.7504, 97.0609, 6.2414),
        "sld-strong": ("Safe SD 1.4 (strong)", 11.5990, 68.8087, 20.7969),
    },
}  # fmt: skip
#: Backwards-compatible view: I2P "sexual", inappropriate probability (%).
SLD_SEXUAL = {s: (label, rate) for s, (label, rate, _, _) in SLD_I2P_README["sexual"].items()}

THESIS_SOURCE = "thesis (Carvajal Reyes 2024), ≈10 images per prompt, SD v1.4 (sd-v1-4.ckpt), DDIM"
SLD_SOURCE = (
    "I2P benchmark README (github.com/ml-research/i2p): SD 1.4 and Safe Latent Diffusion "
    "(Schramowski et al. 2023), 10 images per prompt, NudeNet v2 (0.6) OR Q16"
)
