"""I2VGen-XL's training schedule: cosine ᾱ (s = 0.008, 1000 steps) rescaled to zero terminal SNR, v-prediction
(methods.md §6.2; Lin et al. 2023, Algorithm 1)."""
from __future__ import annotations

import math

import torch

from ..diffusion.noise_schedule import TERMINAL_ALPHA_BAR, zero_terminal_snr_sigmas

__all__ = ["TERMINAL_ALPHA_BAR", "cosine_betas", "i2vgen_xl_sigmas"]

TIMESTEPS = 1000
COSINE_S = 0.008
MAX_BETA = 0.999


def cosine_betas(timesteps: int = TIMESTEPS, s: float = COSINE_S) -> torch.Tensor:
    """β_t = 1 − f(t+1)/f(t), f(u) = cos²((u/T + s)/(1 + s)·π/2), clipped at 0.999; (T,) float64."""
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)


def i2vgen_xl_sigmas() -> torch.Tensor:
    """k-diffusion σ_t = √((1 − ᾱ_t)/ᾱ_t) for t = 0..999 (float64), the last step's ᾱ set to
    :data:`TERMINAL_ALPHA_BAR`."""
    return zero_terminal_snr_sigmas(cosine_betas())
