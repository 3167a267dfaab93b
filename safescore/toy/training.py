"""Denoising score matching (Vincent 2011) in the ε-parameterisation (DDPM's simple loss)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..core.schedules import NoiseSchedule, as_schedule


def train_dsm(
    model: torch.nn.Module,
    data: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train an ε-model by denoising score matching.

    Minimises E_{x0, t, ε} || ε_θ(sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε, t) - ε ||², with t uniform on
    the train timesteps — equivalent to matching the score -ε/sqrt(1-ᾱ_t) (Vincent 2011).
    Adam with cosine learning-rate decay; seeded (``seed``) for reproducibility.

    Args:
        model: ε-model ``(x_t (B, d), t (B,)) -> (B, d)``, e.g. `safescore.nets.ScoreMLP`.
        data: training points, shape (N, d).
        schedule: the `NoiseSchedule`.
        steps, batch_size, lr: optimisation settings.
    Returns:
        the loss at every step (list of floats).
    """
    schedule = as_schedule(schedule)
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    if not isinstance(data, torch.Tensor) or data.ndim != 2 or data.shape[0] < 1:
        raise ValueError("data must be a tensor of shape (N, d) with N >= 1")
    param = next(model.parameters())
    data = data.to(device=param.device, dtype=param.dtype)
    alphas = schedule.alphas_cumprod.to(device=param.device, dtype=param.dtype)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses: list[float] = []
    model.train()
    bar = tqdm(range(steps), desc="DSM", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        t = torch.randint(0, schedule.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(batch_size, data.shape[1], generator=gen).to(param)
        a = alphas[t.to(param.device)][:, None]
        x_t = a.sqrt() * data[idx] + (1 - a).sqrt() * eps
        loss = ((model(x_t, t.to(param.device)) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
    model.eval()
    return losses
