"""Follow-Your-Click's fps and motion-strength conditioning: a scalar embedded like a timestep (methods.md §5.4).

A scalar ``s`` per sample goes through the UNet's own sinusoidal projection – ``C`` channels (320 in SD1.5),
cosines first (``flip_sin_to_cos=True``), frequencies ``exp(−ln(10000)·i/(C/2))`` (no frequency shift) – and an
MLP ``linear_1`` (C → D), SiLU, ``linear_2`` (D → D) with D the time-embedding width (1280); the result is added
to the time embedding, which every ResBlock reads. ``linear_2`` is zero-initialised in training, so an untrained
embedding adds nothing. Parameter names equal the official checkpoint's (``fps_embedding.linear_1.weight`` …).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MAX_PERIOD = 10000.0


def sinusoidal_projection(values: Tensor, channels: int) -> Tensor:
    """``values (B,)`` → ``(B, channels)`` float32: ``[cos(s·ω_i) | sin(s·ω_i)]``, ``ω_i = exp(−ln(10⁴)·i/(C/2))``,
    i = 0…C/2−1."""
    half = channels // 2
    frequencies = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32,
                                                                  device=values.device) / half)
    angles = values.float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ScalarEmbedding(nn.Module):
    """``linear_1`` (C → D), SiLU, ``linear_2`` (D → D) on the sinusoidal projection of a scalar.

    ``linear`` builds the two layers (``nn.Linear`` or a host's own Linear class taking ``dtype``/``device``)."""

    def __init__(self, channels: int, embed_dim: int, *, linear: type[nn.Linear] = nn.Linear,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.channels = channels
        self.linear_1 = linear(channels, embed_dim, dtype=dtype, device=device)
        self.act = nn.SiLU()
        self.linear_2 = linear(embed_dim, embed_dim, dtype=dtype, device=device)

    def forward(self, values: Tensor, dtype: torch.dtype) -> Tensor:
        """``values (B,)`` → embedding ``(B, D)`` computed in ``dtype``."""
        return self.linear_2(self.act(self.linear_1(sinusoidal_projection(values, self.channels).to(dtype))))
