"""Interactive explorers for notebooks: move γ, the CDTC threshold η, the number of steps, the
DDIM noise and the sampler with sliders and watch the samples and trajectories change.

Notation (as in ``docs/theory.md``): η is the CDTC threshold on p_h(x̂0); DDIM's noise parameter
(the ``eta`` argument, as in diffusers) is labelled "DDIM noise", never η.

In a live Jupyter kernel (ipywidgets installed, ``safescore.config.FAST`` off) the explorers
return a widget; everywhere else (CI, the docs build, a script) they draw once with their
defaults and return the static ``Figure``. Pass ``interactive=True/False`` to choose.

The drawing lives in `RingExplorer.update` / `PipelineExplorer.update`, so a redraw can be timed
(and tested) without a browser. Plotting layer: imports matplotlib, never switches backends.
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from . import config
from .core.guidance import NegativeGuidance, SafeGuidance, SignalScaledGamma
from .core.sampling import sample
from .plotting import HARMFUL_COLOR, SAFE_COLOR, _coloured_paths, plot_modes

STRATEGIES = ("plain", "safe", "safe (no CDTC)", "negative")
SOLVER_NAMES = {"DDIM": "ddim", "DPM-Solver++ (2M)": "dpm++2m"}


def _live_kernel() -> bool:
    """True inside a running IPython kernel with ipywidgets importable, outside fast mode."""
    if config.FAST:
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _same_settings(a: dict, b: dict) -> bool:
    """True when two settings dicts hold the same values, numbers compared up to rounding."""

    def same(x, y) -> bool:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        return math.isclose(x, y, rel_tol=1e-9) if numbers else x == y

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def _redrawer(explorer, out, timing):
    """The controls' callback: shows ``explorer``'s figure in the Output widget ``out`` and the
    time taken in the Label ``timing``, resampling only for settings not shown yet.

    The first call shows the figure the explorer drew when it was made (its settings are the
    controls' starting values). A log slider sends its value back as base**log_base(value) when
    a page draws it, off by a rounding error: that round trip does not resample either.
    """
    from IPython.display import display

    shown = None

    def redraw(**params):
        nonlocal shown
        if shown is not None and _same_settings(shown, params):
            return
        if shown is None and _same_settings(explorer.params, params):
            fig = explorer.figure
        else:
            fig = explorer.update(**params)
        shown = params
        with out:
            out.clear_output(wait=True)
            display(fig)
        timing.value = f"redrawn in {explorer.last_seconds:.2f} s"

    return redraw


class RingExplorer:
    """Samples and trajectories of one sampler on a 2-D toy problem, redrawn on demand.

    Args:
        problem: a `safescore.toy.ToyProblem` (default: ``toy.ring_problem()``), sampled with its
            exact ε-oracle.
        n: samples drawn (the same x_T for every setting); n_traj: trajectories drawn.
        seed: seed of x_T and of the DDIM noise draws (``eta > 0``).
        gamma, threshold, steps, eta, strategy, solver: the starting settings (γ and the
            threshold η default to the problem's; ``threshold`` is ignored by "safe (no CDTC)"
            and "plain"; ``eta`` is the DDIM noise in [0, 1], used by the DDIM solver only).
    """

    def __init__(
        self,
        problem=None,
        *,
        n: int | None = None,
        n_traj: int = 30,
        seed: int = 0,
        gamma: float | None = None,
        threshold: float | None = None,
        steps: int = 50,
        eta: float = 0.0,
        strategy: str = "safe",
        solver: str = "DDIM",
        lim: float = 3.5,
    ):
        if problem is None:
            from .toy.problems import ring_problem

            problem = ring_problem()
        self.problem = problem
        self.eps_model = problem.eps_model()
        n = (300 if config.FAST else 1000) if n is None else n
        self.x_T = problem.noise(n, torch.Generator().manual_seed(seed))
        self.seed = seed
        self.n_traj = n_traj
        self.lim = lim
        self.params = {
            "gamma": problem.gamma if gamma is None else gamma,
            "threshold": problem.threshold if threshold is None else threshold,
            "steps": steps,
            "eta": eta,
            "strategy": strategy,
            "solver": solver,
        }
        self.figure, self.axes = plt.subplots(1, 2, figsize=(10, 4.8))
        plt.close(self.figure)  # shown on request (display / widget), never by pyplot
        self.last_seconds = float("nan")
        self.update()

    def guidance(self, strategy: str, gamma: float, threshold: float):
        """The guidance object of a strategy name (None for "plain")."""
        density = self.problem.density
        if strategy == "plain":
            return None
        if strategy == "safe":
            return SafeGuidance(density, gamma, threshold)
        if strategy == "safe (no CDTC)":
            return SafeGuidance(density, gamma, None)
        if strategy == "negative":
            # The slider's γ is the x̂0 step; negative guidance works at 10x that scale here.
            return NegativeGuidance(density, 10 * gamma, threshold)
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")

    def run(self, **params):
        """Sample with the current settings updated by ``params``; return the SampleResult."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(self.params)}")
        self.params.update(params)
        p = self.params
        solver = SOLVER_NAMES.get(p["solver"], p["solver"])
        return sample(
            self.eps_model,
            self.problem.schedule,
            self.x_T,
            int(p["steps"]),
            solver=solver,
            eta=float(p["eta"]) if solver == "ddim" else 0.0,
            guidance=self.guidance(p["strategy"], float(p["gamma"]), float(p["threshold"])),
            generator=torch.Generator().manual_seed(self.seed + 1),
            record=True,
        )

    def update(self, **params):
        """Resample and redraw both panels; return the figure. The time taken (sampling and
        drawing) is kept in ``last_seconds``."""
        t0 = time.perf_counter()
        result = self.run(**params)
        self._draw(result)
        self.last_seconds = time.perf_counter() - t0
        return self.figure

    def _draw(self, result) -> None:
        ax_s, ax_t = self.axes
        mixture, harmful = self.problem.mixture, self.problem.harmful
        x = result.samples.detach().double()
        finite = torch.isfinite(x).all(-1)
        x = x[finite]
        lab = mixture.component_log_probs(x.clamp(-1e6, 1e6)).argmax(-1)
        bad = torch.as_tensor(harmful)[lab]
        p = self.params
        ax_s.clear()
        plot_modes(mixture, harmful, ax=ax_s, label=False)
        ax_s.scatter(x[~bad, 0], x[~bad, 1], s=5, c=SAFE_COLOR, alpha=0.6, linewidths=0)
        ax_s.scatter(x[bad, 0], x[bad, 1], s=5, c=HARMFUL_COLOR, alpha=0.8, linewidths=0)
        rate = f"{float(bad.double().mean()):.1%}" if len(x) else "n/a"
        changed = float(result.ever_corrected.double().mean())
        title = f"{p['strategy']}: harmful rate {rate}, corrected {changed:.1%}"
        n_total = len(finite)
        n_out = n_total - int((x.abs() <= self.lim).all(-1).sum())
        if n_out:
            # Samples thrown off the ring (e.g. threshold 0: every sample corrected at every
            # step) are outside the axes: say so instead of showing a near-empty panel.
            title += f"\n{n_out} of {n_total} samples outside the view"
            farthest = f"{float(x.norm(dim=-1).max()):.3g}" if len(x) else "n/a"
            note = (
                f"{n_out} of {n_total} samples\nlie outside this view\n(farthest: |x| = {farthest}"
            )
            note += f";\nnot finite: {n_total - len(x)})" if n_total > len(x) else ")"
            ax_s.text(
                0.5, 0.5, note, transform=ax_s.transAxes, ha="center", va="center", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": HARMFUL_COLOR, "alpha": 0.9},
            )  # fmt: skip
        ax_s.set_title(title, fontsize=11)
        ax_t.clear()
        traj = result.trajectory[:, : self.n_traj].detach().double().numpy()
        _coloured_paths(ax_t, traj, "viridis", 0.8, 0.7)
        c = result.corrected[:, : self.n_traj]
        if c.any():
            pts = result.x0_hats[:, : self.n_traj][c].detach().double()
            ax_t.scatter(
                pts[:, 0], pts[:, 1], marker="x", s=14, c=HARMFUL_COLOR, label="corrected x̂0"
            )
            ax_t.legend(loc="upper right", fontsize=9)
        plot_modes(mixture, harmful, ax=ax_t, label=False)
        end = traj[-1]
        ax_t.scatter(end[:, 0], end[:, 1], s=8, c="k", zorder=3)
        ax_t.set_title(
            f"{p['solver']}, {int(p['steps'])} steps, γ={float(p['gamma']):.4g}, "
            f"threshold η={float(p['threshold']):.2f}, DDIM noise {float(p['eta']):.2f}",
            fontsize=10,
        )
        for ax in self.axes:
            ax.set(xlim=(-self.lim, self.lim), ylim=(-self.lim, self.lim))
            ax.set_aspect("equal")
            ax.tick_params(labelsize=9)
        self.figure.tight_layout()

    def widget(self):
        """Sliders and dropdowns above the figure (needs ipywidgets and a live kernel)."""
        import ipywidgets as w

        p = self.params
        g = float(p["gamma"])
        controls = {
            "gamma": w.FloatLogSlider(
                value=g, base=10, min=np.log10(g) - 2, max=np.log10(g) + 1, description="γ"
            ),
            "threshold": w.FloatSlider(
                value=p["threshold"], min=0.0, max=1.0, step=0.05, description="threshold"
            ),
            "steps": w.IntSlider(value=p["steps"], min=5, max=200, step=5, description="steps"),
            "eta": w.FloatSlider(
                value=p["eta"],
                min=0.0,
                max=1.0,
                step=0.1,
                description="DDIM noise",
                style={"description_width": "initial"},
            ),
            "strategy": w.Dropdown(options=STRATEGIES, value=p["strategy"], description="sampler"),
            "solver": w.Dropdown(
                options=list(SOLVER_NAMES), value=p["solver"], description="solver"
            ),
        }
        out = w.Output()
        timing = w.Label()
        w.interactive_output(_redrawer(self, out, timing), controls)
        box = w.VBox(
            [
                w.HBox([controls["gamma"], controls["threshold"], controls["steps"]]),
                w.HBox([controls["eta"], controls["strategy"], controls["solver"]]),
                timing,
                out,
            ]
        )
        return box


def ring_explorer(problem=None, *, interactive: bool | None = None, **settings):
    """Sliders for γ, the threshold η, the number of steps, the DDIM noise and the sampler on a
    2-D toy problem.

    In a live notebook returns the widget; otherwise (``interactive=False``, CI, the docs) draws
    once with the defaults and returns the static ``Figure``. ``settings`` go to `RingExplorer`.
    """
    explorer = RingExplorer(problem, **settings)
    if interactive is None:
        interactive = _live_kernel()
    return explorer.widget() if interactive else explorer.figure


class PipelineExplorer:
    """Plain vs safe images of a Stable-Diffusion-style pipeline, redrawn for γ and threshold.

    Written against the `safescore.sd.SafeStableDiffusionPipeline` call API:
    ``pipe(prompt, guidance=..., num_inference_steps=..., generator=..., output_type="np")``.
    The plain images are computed once; every update resamples the safe ones from the same
    seed, with ``guidance = SafeGuidance(density, gamma, threshold)``.

    Args:
        pipe: the pipeline (e.g. ``safescore.sd.mini.load_pipeline()``).
        prompt: a prompt or a list of prompts (one image each).
        density: the harm density (e.g. ``mini.clip_density(["a handwritten three"])``).
        gamma, threshold: starting values; steps: sampler steps; seed: the generator's seed.
        gamma_schedule: None (γ constant over the steps) or a function of the slider's γ
            returning a γ schedule, e.g. ``safescore.sd.mini.safe_gamma`` (γ_t = γ · √ᾱ_t).
        pipe_kwargs: more keyword arguments for every pipeline call (``height``, ...).
    """

    def __init__(
        self,
        pipe,
        prompt,
        density,
        *,
        gamma: float,
        threshold: float | None = 0.5,
        steps: int = 20,
        seed: int = 0,
        gamma_schedule=None,
        **pipe_kwargs,
    ):
        if gamma_schedule is not None and not callable(gamma_schedule):
            raise TypeError(
                f"gamma_schedule must be None or a function of γ, got {type(gamma_schedule).__name__}"
            )
        self.gamma_schedule = gamma_schedule
        self.pipe, self.density = pipe, density
        self.prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        self.steps, self.seed, self.pipe_kwargs = steps, seed, pipe_kwargs
        self.params = {"gamma": gamma, "threshold": threshold}
        self.plain = self._images(None)
        n = len(self.prompts)
        self.figure, self.axes = plt.subplots(
            2, n, figsize=(2.6 * n, 5.8), squeeze=False, layout="constrained"
        )
        plt.close(self.figure)
        self.last_seconds = float("nan")
        self.update()

    def _images(self, guidance) -> np.ndarray:
        out = self.pipe(
            self.prompts,
            guidance=guidance,
            num_inference_steps=self.steps,
            generator=torch.Generator().manual_seed(self.seed),
            output_type="np",
            **self.pipe_kwargs,
        )
        return np.asarray(out.images)

    def update(self, **params):
        """Resample the safe images with updated ``gamma`` / ``threshold``; return the figure."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; known: gamma, threshold")
        self.params.update(params)
        t0 = time.perf_counter()
        gamma, threshold = float(self.params["gamma"]), self.params["threshold"]
        schedule = gamma if self.gamma_schedule is None else self.gamma_schedule(gamma)
        safe = self._images(SafeGuidance(self.density, schedule, threshold))
        for j, prompt in enumerate(self.prompts):
            for row, (imgs, what) in enumerate(((self.plain, "plain"), (safe, "safe"))):
                ax = self.axes[row, j]
                ax.clear()
                ax.imshow(np.clip(imgs[j], 0, 1))
                ax.set(xticks=[], yticks=[])
                ax.set_title(f"{what}: {prompt}", fontsize=9)
        thr = "every step" if threshold is None else f"threshold η = {float(threshold):.2f}"
        if isinstance(schedule, SignalScaledGamma):  # e.g. the mini model's γ_t = γ·√ᾱ_t
            label = f"γ_t={gamma:.4g}·ᾱ_t^{schedule.power:g}"
        elif self.gamma_schedule is not None:
            label = f"γ={gamma:.4g} ({type(schedule).__name__})"
        else:
            label = f"γ={gamma:.4g}"
        self.figure.suptitle(f"safe: {label}, {thr}", fontsize=11)
        self.last_seconds = time.perf_counter() - t0
        return self.figure

    def widget(self, *, gamma_range: tuple[float, float] | None = None):
        """γ (log scale) and threshold sliders above the figure (needs ipywidgets)."""
        import ipywidgets as w

        g = float(self.params["gamma"])
        lo, hi = gamma_range or (g / 100, g * 10)
        thr = self.params["threshold"]
        controls = {
            "gamma": w.FloatLogSlider(
                value=g, base=10, min=np.log10(lo), max=np.log10(hi), description="γ"
            ),
            "threshold": w.FloatSlider(
                value=0.5 if thr is None else thr,
                min=0.0,
                max=1.0,
                step=0.05,
                description="threshold",
                continuous_update=False,
            ),
        }
        controls["gamma"].continuous_update = False
        out, timing = w.Output(), w.Label()
        w.interactive_output(_redrawer(self, out, timing), controls)
        return w.VBox([w.HBox(list(controls.values())), timing, out])


def pipeline_explorer(
    pipe, prompt, density, *, gamma: float, interactive: bool | None = None, **settings
):
    """γ and threshold sliders on a Stable-Diffusion-style pipeline: plain beside safe images.

    In a live notebook returns the widget; otherwise draws once with the given values and
    returns the static ``Figure``. ``settings`` go to `PipelineExplorer`.
    """
    explorer = PipelineExplorer(pipe, prompt, density, gamma=gamma, **settings)
    if interactive is None:
        interactive = _live_kernel()
    return explorer.widget() if interactive else explorer.figure
