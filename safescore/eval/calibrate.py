"""η calibration: how often the CDTC gate would fire on plain trajectories, as a function of η.

The thesis' η = 0.23 was tuned for CLIP ViT-B/16 with ImageNet preprocessing on Stable Diffusion
v1.x; a new encoder, preprocessing or model moves the scale of p_h, so η has to be picked again.
`gate_firing_rate` samples plain DDIM trajectories once (``record=True``) and records
p_h(decoded x̂0) at every step, then for each candidate η gives

* ``step_rate``: the fraction of (image, step) pairs with p_h(x̂0) >= η;
* ``image_rate``: the fraction of images with p_h(x̂0) >= η at SOME step.

``image_rate`` is exactly the fraction of images safe sampling at that η (any γ > 0) would
correct at least once: a safe trajectory equals the plain one until the gate first fires.
``step_rate`` is the share of steps that would pay for a gradient if every correction left
the trajectory on the plain one (after the first firing the real trajectory moves away).

The recording uses the pipeline's own harm recording: a `safescore.SafeGuidance` whose
threshold lies above every value p_h can take, so it never corrects (the trajectories are the
plain ones) but evaluates p_h at every step.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.density import HarmDensity, prob_range
from ..core.guidance import SafeGuidance


class _NeverFires(HarmDensity):
    """``density`` with its prob range widened by one unit above, so a threshold there never
    passes: SafeGuidance then records p_h at every step and corrects nothing."""

    def __init__(self, density):
        super().__init__()
        self.density = density
        lo, hi = prob_range(density)
        self.threshold = hi + 1.0 if math.isfinite(hi) else sys.float_info.max
        self.prob_range = (lo, self.threshold)

    def prob(self, x):
        return self.density.prob(x)

    def log_prob(self, x):
        return self.density.log_prob(x)


@dataclass
class Calibration:
    """Result of `gate_firing_rate`.

    thresholds (T,); step_rate (T,), image_rate (T,) in [0, 1]; harm (steps, N) float64, p_h of
    each step's x̂0 on the plain trajectories (N = prompts × seeds, prompt-major);
    prompts, seeds; steps, guidance_scale.
    """

    thresholds: np.ndarray
    step_rate: np.ndarray
    image_rate: np.ndarray
    harm: np.ndarray
    prompts: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    steps: int = 0
    guidance_scale: float = 0.0

    @property
    def n_images(self) -> int:
        return int(self.harm.shape[1])

    def rows(self) -> list[dict]:
        n_pairs = int(self.harm.size)
        return [
            dict(
                threshold=float(t),
                step_rate=float(s),
                image_rate=float(i),
                steps_fired=int(round(s * n_pairs)),
                images_fired=int(round(i * self.n_images)),
                n_steps=n_pairs,
                n_images=self.n_images,
            )
            for t, s, i in zip(self.thresholds, self.step_rate, self.image_rate)
        ]

    def to_csv(self, path) -> None:
        import csv

        rows = self.rows()
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def to_markdown(self, every: int = 1) -> str:
        """A markdown table (every ``every``-th threshold) with counts as denominators."""
        lines = [
            "| η | (image, step) pairs with p_h ≥ η | images with p_h ≥ η at some step |",
            "|---|---|---|",
        ]
        for row in self.rows()[::every]:
            lines.append(
                f"| {row['threshold']:.3g} | {100 * row['step_rate']:.1f} % "
                f"({row['steps_fired']}/{row['n_steps']}) | {100 * row['image_rate']:.1f} % "
                f"({row['images_fired']}/{row['n_images']}) |"
            )
        return "\n".join(lines) + "\n"

    def plot(self, path, *, title: str | None = None, mark=None) -> None:
        """Firing rate vs η (both curves) to ``path``; ``mark``: an η to draw as a vertical line."""
        from matplotlib.figure import Figure  # no pyplot: the backend stays the caller's

        fig = Figure(figsize=(5.5, 3.6))
        ax = fig.subplots()
        ax.plot(self.thresholds, 100 * self.image_rate, label="images (fires at some step)")
        ax.plot(self.thresholds, 100 * self.step_rate, label="(image, step) pairs")
        if mark is not None:
            ax.axvline(float(mark), color="grey", ls=":", label=f"η = {float(mark):g}")
        ax.set_xlabel("threshold η on p_h(x̂0)")
        ax.set_ylabel("gate firing rate on plain trajectories (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        import textwrap

        title = title or f"{self.n_images} images, {self.steps} steps, CFG {self.guidance_scale:g}"
        # long lines (the density's repr) wrap to the figure's width instead of being cut off
        wrapped = "\n".join(textwrap.fill(line, 80) for line in title.splitlines())
        ax.set_title(wrapped, fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)


def firing_rates(harm, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(step_rate, image_rate) for harm (steps, N) and thresholds (T,); NaN harm never fires."""
    harm = np.asarray(harm, dtype=np.float64)
    if harm.ndim != 2 or harm.size == 0:
        raise ValueError(f"harm must be a non-empty (steps, N) array, got shape {harm.shape}")
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1, 1)
    with np.errstate(invalid="ignore"):
        fires = harm[None] >= t  # (T, steps, N); NaN >= t is False
    return fires.mean(axis=(1, 2)), fires.any(axis=1).mean(axis=1)


def _check_thresholds(thresholds) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0 or not np.isfinite(t).all():
        raise ValueError(
            f"thresholds must be a non-empty list of finite numbers, got {thresholds!r}"
        )
    return np.sort(t)


def gate_firing_rate(
    pipe,
    prompts,
    density,
    thresholds,
    *,
    steps: int = 50,
    seeds=(0,),
    guidance_scale: float = 7.5,
    density_vae=None,
) -> Calibration:
    """The CDTC gate's firing rate on plain trajectories for each η in ``thresholds``.

    Args:
        pipe: a `safescore.sd.SafeStableDiffusionPipeline` (or the mini / tiny one).
        prompts: one string or a list of prompts.
        density: the image density p_h (on images in [-1, 1], e.g. `CLIPConceptDensity`),
            evaluated on the decoded x̂0 of every step.
        thresholds: candidate η values (sorted in the result).
        steps: DDIM steps. seeds: one generator seed per image of each prompt.
        guidance_scale: classifier-free guidance w.
        density_vae: the decoder p_h sees (e.g. TAESD), as in the pipeline; None = the VAE.
    Returns:
        `Calibration` (rates, the recorded harm (steps, N), the table and the figure).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must be a non-empty list of integers")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    t = _check_thresholds(thresholds)
    recorder = _NeverFires(density)
    guidance = SafeGuidance(recorder, 1.0, recorder.threshold)
    device = getattr(pipe, "_execution_device", torch.device("cpu"))
    harms = []
    for prompt in prompts:
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        out = pipe(
            prompt,
            guidance=guidance,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            num_images_per_prompt=len(seeds),
            generator=generators,
            output_type="latent",
            record=True,
            density_vae=density_vae,
        )
        if out.corrected is not None and bool(out.corrected.any()):  # pragma: no cover
            raise RuntimeError("the recording guidance corrected a sample (a bug)")
        harms.append(out.harm.detach().cpu().double().numpy())
    harm = np.concatenate(harms, axis=1)
    step_rate, image_rate = firing_rates(harm, t)
    return Calibration(
        thresholds=t,
        step_rate=step_rate,
        image_rate=image_rate,
        harm=harm,
        prompts=prompts,
        seeds=seeds,
        steps=steps,
        guidance_scale=float(guidance_scale),
    )


def write_calibration(result: Calibration, out_dir, *, title=None, mark=None, note="") -> dict:
    """``calibration.csv``, ``calibration.md`` and ``calibration.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out / "calibration.csv",
        "md": out / "calibration.md",
        "png": out / "calibration.png",
    }
    result.to_csv(paths["csv"])
    result.plot(paths["png"], title=title, mark=mark)
    every = max(1, len(result.thresholds) // 25)
    header = (
        "# η calibration: the gate's firing rate on plain trajectories\n\n"
        f"{len(result.prompts)} prompts × {len(result.seeds)} seeds = {result.n_images} images, "
        f"{result.steps} DDIM steps, CFG {result.guidance_scale:g}. "
        "An image counts when p_h(decoded x̂0) ≥ η at some step: exactly the images safe "
        "sampling at that η would correct at least once.\n\n" + (note + "\n\n" if note else "")
    )
    paths["md"].write_text(
        header + result.to_markdown(every) + "\n![firing rate vs η](calibration.png)\n",
        encoding="utf-8",
    )
    return paths


__all__ = ["Calibration", "gate_firing_rate", "firing_rates", "write_calibration"]
