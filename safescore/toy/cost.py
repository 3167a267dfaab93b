"""Time and memory of a guidance gradient, measured on CPU.

Memory is measured as the bytes of the tensors autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``): the activations a gradient must keep alive, which
is where the x_t-space gradient (through the ε-model) and the x̂0-space gradient (through the
harm density only) differ. Storages shared by several saved tensors count once; the model's own
parameters, which exist anyway, are not counted. Time is the wall time per DDIM step (best of
``repeats`` runs, without the hooks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.sampling import ddim_sample
from ..core.schedules import NoiseSchedule


@dataclass
class GuidanceCost:
    """Cost of sampling with one guidance.

    seconds_per_step: best-of-``repeats`` wall time of one DDIM step (s).
    peak_saved_bytes: the most bytes saved for backward within one step (activations).
    mean_saved_bytes: the same, averaged over the steps.
    """

    seconds_per_step: float
    peak_saved_bytes: int
    mean_saved_bytes: float


def _parameter_storages(*objects) -> set[int]:
    ptrs: set[int] = set()
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                ptrs.add(p.untyped_storage().data_ptr())
            for b in obj.buffers():
                ptrs.add(b.untyped_storage().data_ptr())
    return ptrs


def measure_guidance_cost(
    eps_model,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    num_steps: int,
    guidance=None,
    *,
    repeats: int = 3,
) -> GuidanceCost:
    """Time per step and activation memory of ``ddim_sample(..., guidance=guidance)``.

    Args:
        eps_model, schedule, x_T (B, ...), num_steps, guidance: as for `ddim_sample`
            (``guidance=None`` is the unguided baseline: nothing is saved for backward).
        repeats: timing runs; the fastest is reported.
    Returns:
        `GuidanceCost`.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    # 1. Memory: bytes saved for backward, per step (the callback closes a step).
    skip = _parameter_storages(eps_model, getattr(guidance, "density", None))
    per_step: list[int] = []
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            seen[ptr] = storage.nbytes()
        return t

    def end_of_step(_info: dict) -> None:
        per_step.append(sum(seen.values()))
        seen.clear()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ddim_sample(eps_model, schedule, x_T, num_steps, guidance=guidance, callback=end_of_step)
    # 2. Time: best of `repeats` runs without hooks.
    best = min(
        ddim_sample(eps_model, schedule, x_T, num_steps, guidance=guidance).seconds
        for _ in range(repeats)
    )
    return GuidanceCost(
        seconds_per_step=best / num_steps,
        peak_saved_bytes=max(per_step),
        mean_saved_bytes=sum(per_step) / len(per_step),
    )
