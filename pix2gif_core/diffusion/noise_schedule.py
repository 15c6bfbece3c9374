"""Discrete diffusion noise schedules (β over 1000 training timesteps) and their k-diffusion σ values.

Names follow LDM/ComfyUI: ``"linear"`` is SD1.5's *scaled* linear schedule (linear in √β), ``"sqrt_linear"`` is
linear in β – what diffusers calls ``"linear"`` and what AnimateDiff's motion modules were trained with
(methods.md §1.5, §9.7). Zero-terminal-SNR rescaling (Lin et al. 2023, Algorithm 1) is what the v-prediction
video models (I2VGen-XL, Follow-Your-Click) were trained on.
"""
from __future__ import annotations

import torch

from ..errors import Pix2GifInputError

SD15_BETA_START = 0.00085
SD15_BETA_END = 0.012
SCHEDULES = ("sqrt_linear", "linear")


def betas(schedule: str, timesteps: int = 1000, beta_start: float = SD15_BETA_START,
          beta_end: float = SD15_BETA_END) -> torch.Tensor:
    """β_t for t = 0..timesteps-1 as float64, shape (timesteps,)."""
    if schedule == "sqrt_linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if schedule == "linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    raise Pix2GifInputError(f"beta_schedule '{schedule}' is unknown; choose one of {', '.join(SCHEDULES)}")


def sigmas_from_betas(beta: torch.Tensor) -> torch.Tensor:
    """k-diffusion noise levels σ_t = √((1 − ᾱ_t) / ᾱ_t), shape like ``beta``."""
    alphas_cumprod = torch.cumprod(1.0 - beta, dim=0)
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


#: ᾱ given to the last step of a zero-terminal-SNR schedule instead of 0, so its σ is finite (the value ComfyUI's
#: own zsnr rescale uses)
TERMINAL_ALPHA_BAR = 4.8973451890853435e-08


def zero_terminal_snr_alphas_cumprod(beta: torch.Tensor) -> torch.Tensor:
    """√ᾱ shifted and scaled so that √ᾱ_T = 0 while √ᾱ_0 is kept; returns ᾱ, shape like ``beta``."""
    root = torch.cumprod(1 - beta, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    return root ** 2


def zero_terminal_snr_sigmas(beta: torch.Tensor) -> torch.Tensor:
    """k-diffusion σ_t of ``beta`` rescaled to zero terminal SNR, the last step's ᾱ set to
    :data:`TERMINAL_ALPHA_BAR`; shape like ``beta``."""
    alphas_cumprod = zero_terminal_snr_alphas_cumprod(beta)
    alphas_cumprod[-1] = TERMINAL_ALPHA_BAR
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
