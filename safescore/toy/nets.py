"""A time-conditioned MLP ε-model for vectors (2-D toys, PCA codes, 8×8 digits)."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t (B,) -> (B, dim) (Transformer / DDPM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ScoreMLP(nn.Module):
    """ε-model ``eps = model(x_t, t)`` for vectors: an MLP on [x_t, embed(t)].

    Args:
        dim: data dimension d.
        hidden: width of the hidden layers.
        num_layers: number of hidden layers.
        time_embed_dim: size of the sinusoidal timestep embedding.
    Shapes: x_t (B, d), t an int or a tensor (B,) of train timesteps -> eps (B, d).
    """

    def __init__(self, dim: int, hidden: int = 256, num_layers: int = 3, time_embed_dim: int = 64):
        super().__init__()
        for name, v in (
            ("dim", dim),
            ("hidden", hidden),
            ("num_layers", num_layers),
            ("time_embed_dim", time_embed_dim),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        self.dim, self.time_embed_dim = dim, time_embed_dim
        layers: list[nn.Module] = []
        width = dim + time_embed_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        if x_t.ndim != 2 or x_t.shape[1] != self.dim:
            raise ValueError(f"x_t must have shape (B, {self.dim}), got {tuple(x_t.shape)}")
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        dtype = next(self.parameters()).dtype
        emb = timestep_embedding(t, self.time_embed_dim).to(dtype)
        return self.net(torch.cat([x_t.to(dtype), emb], dim=-1)).to(x_t.dtype)
