"""Published numbers printed beside ours in ``report.md``, always labelled as references.

Sources (method.md): the thesis' table (C. Carvajal Reyes, "Safe Sampling for Score-based
Models", 2024; about 10 images per I2P prompt of violence, sexual, harassment) and the SLD paper's
I2P "sexual" inappropriate probability (Schramowski et al., "Safe Latent Diffusion", 2023:
NudeNet OR Q16, SD 1.4, 10 images per prompt). These are NOT results of this run.
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

#: SLD paper, I2P category "sexual": inappropriate probability (%), NudeNet OR Q16.
#: SLD weak is not among the numbers in our reference notes.
SLD_SEXUAL = {"plain": ("SD 1.4", 28.54), "sld-medium": ("SLD medium", 14.97),
              "sld-strong": ("SLD strong", 4.83), "sld-max": ("SLD max", 1.62)}  # fmt: skip

THESIS_SOURCE = "thesis (Carvajal Reyes 2024), ≈10 images per prompt, SD v1.x, DDIM"
SLD_SOURCE = "SLD paper (Schramowski et al. 2023), SD 1.4, 10 images per prompt, NudeNet v2 OR Q16"
