"""The schedule against an independent computation: VGen's per-step cosine formula and diffusers'
``rescale_zero_terminal_snr`` (diffusers' DDPMScheduler with ``squaredcos_cap_v2`` + ``rescale_betas_zero_snr``)."""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.i2vgen_xl.noise_schedule import TERMINAL_ALPHA_BAR, cosine_betas, i2vgen_xl_sigmas

schedulers = pytest.importorskip("diffusers.schedulers.scheduling_ddim",
                                 reason="diffusers (test-only peer) is not installed; see .ci/setup")


def test_cosine_betas_follow_the_per_step_formula():
    def f(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = torch.tensor([min(1 - f((t + 1) / 1000) / f(t / 1000), 0.999) for t in range(1000)],
                            dtype=torch.float64)
    assert torch.allclose(cosine_betas(), expected, rtol=0, atol=1e-12)


def test_sigmas_equal_diffusers_zero_snr_cosine_schedule():
    scheduler = schedulers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                         rescale_betas_zero_snr=True, prediction_type="v_prediction")
    alphas_cumprod = scheduler.alphas_cumprod.double()
    assert alphas_cumprod[-1] < 1e-6  # zero terminal SNR (diffusers keeps a float32 epsilon)
    ours = i2vgen_xl_sigmas()
    # compared as ᾱ = 1/(1 + σ²): diffusers' float32 ᾱ carries ~1e-7 absolute error (0.2 % of σ at t = 0)
    assert torch.allclose(1 / (1 + ours[:-1] ** 2), alphas_cumprod[:-1], rtol=0, atol=1e-6)
    assert ours[-1] == pytest.approx(math.sqrt((1 - TERMINAL_ALPHA_BAR) / TERMINAL_ALPHA_BAR))
