"""I2VGen-XL's training schedule: cosine ᾱ (s = 0.008, 1000 steps) rescaled to zero terminal SNR, v-prediction
(methods.md §6.2; Lin et al. 2023, Algorithm 1)."""
from __future__ import annotations

import math

import torch

TIMESTEPS = 1000
COSINE_S = 0.008
MAX_BETA = 0.999
#: ᾱ given to the last step instead of 0, so its σ is finite (the value ComfyUI's own zsnr rescale uses)
TERMINAL_ALPHA_BAR = 4.8973451890853435e-08


def cosine_betas(timesteps: int = TIMESTEPS, s: float = COSINE_S) -> torch.Tensor:
    """β_t = 1 − f(t+1)/f(t), f(u) = cos²((u/T + s)/(1 + s)·π/2), clipped at 0.999; (T,) float64."""
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)


def zero_terminal_snr_alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """√ᾱ shifted and scaled so that √ᾱ_T = 0 while √ᾱ_0 is kept; returns ᾱ, shape like ``betas``."""
    root = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    return root ** 2


def i2vgen_xl_sigmas() -> torch.Tensor:
    """k-diffusion σ_t = √((1 − ᾱ_t)/ᾱ_t) for t = 0..999 (float64), the last step's ᾱ set to
    :data:`TERMINAL_ALPHA_BAR`."""
    alphas_cumprod = zero_terminal_snr_alphas_cumprod(cosine_betas())
    alphas_cumprod[-1] = TERMINAL_ALPHA_BAR
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
