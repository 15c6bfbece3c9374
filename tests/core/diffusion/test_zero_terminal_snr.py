"""Zero-terminal-SNR sigmas against diffusers' DDIMScheduler (a peer implementation) on Follow-Your-Click's schedule:
``beta_schedule="linear"`` 0.00085–0.012 with ``rescale_betas_zero_snr=True`` (methods.md §5.1)."""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.diffusion import noise_schedule

schedulers = pytest.importorskip("diffusers.schedulers")


def test_follow_your_click_sigmas_are_diffusers_zero_snr_linear_schedule():
    peer = schedulers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                                    rescale_betas_zero_snr=True)
    alphas_cumprod = peer.alphas_cumprod.double()[:-1]
    expected = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    ours = noise_schedule.zero_terminal_snr_sigmas(noise_schedule.betas("sqrt_linear"))
    assert peer.alphas_cumprod[-1] < 1e-6, "diffusers' terminal step has (almost) zero SNR"
    assert torch.allclose(ours[:-1], expected, rtol=1e-4)
    terminal = noise_schedule.TERMINAL_ALPHA_BAR
    assert ours[-1].item() == pytest.approx(math.sqrt((1 - terminal) / terminal))
