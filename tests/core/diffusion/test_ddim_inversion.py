"""DDIM inversion: exact for an oracle denoiser, reversible by Euler sampling for an exact Gaussian denoiser."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.diffusion.ddim_inversion import check_trajectory_sigmas, ddim_invert
from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.diffusion.noise_schedule import betas, sigmas_from_betas

MEAN, STD = 0.3, 0.5  # Gaussian "data set": every latent element ~ N(MEAN, STD²)


def sd15_sigmas(steps: int, final_zero: bool = True) -> torch.Tensor:
    """``steps`` levels of SD1.5's schedule, evenly spaced in timestep from t=999 down, then 0 (as ComfyUI)."""
    table = sigmas_from_betas(betas("linear"))
    picked = table[torch.linspace(999, 0, steps).round().long()]
    return torch.cat([picked, picked.new_zeros(1)]) if final_zero else picked


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + σε = x] for x0 ~ N(MEAN, STD²): the exact denoiser of this data set."""
    sigma = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    return MEAN + STD**2 / (STD**2 + sigma**2) * (x - MEAN)


def euler_sample(x: torch.Tensor, sigmas: torch.Tensor, denoise) -> torch.Tensor:
    """k-diffusion ``sample_euler`` without churn (ComfyUI's euler / ddim), written out independently."""
    for high, low in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        derivative = (x - denoise(x, torch.full((x.shape[0],), high, dtype=x.dtype))) / high
        x = x + derivative * (low - high)
    return x


def test_oracle_denoiser_inverts_exactly():
    torch.manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
    sigmas = sd15_sigmas(20, final_zero=False)
    start = x0 + sigmas[-1] * noise
    trajectory = ddim_invert(start, sigmas, lambda x, sigma: x0)
    assert len(trajectory) == len(sigmas)
    for level, latent in zip(sigmas.tolist(), trajectory):
        torch.testing.assert_close(latent, x0 + level * noise, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(euler_sample(trajectory[0], sigmas, lambda x, sigma: x0), start)


@pytest.mark.parametrize(("steps", "noise_error", "round_trip_error"), [(50, 0.07, 0.25), (200, 0.02, 0.07)])
def test_gaussian_round_trip_returns_to_the_clean_latent(steps, noise_error, round_trip_error):
    """Euler is first order: measured 4.9 % / 1.2 % noise error and 0.18 / 0.049 round trip for 50 / 200 steps
    (|x0 − MEAN| up to 1.85), i.e. both vanish as the steps get finer."""
    torch.manual_seed(1)
    x0 = MEAN + STD * torch.randn(2, 4, 8, 8, dtype=torch.float64)
    sigmas = sd15_sigmas(steps)
    trajectory = ddim_invert(x0, sigmas, gaussian_denoiser)
    assert trajectory[-1] is x0
    # The exact probability-flow ODE of this data set: x(σ) − MEAN = (x0 − MEAN)·√(STD² + σ²)/STD.
    exact_noise = MEAN + (x0 - MEAN) * (STD**2 + sigmas[0] ** 2).sqrt() / STD
    assert (trajectory[0] - exact_noise).abs().max() < noise_error * (exact_noise - MEAN).abs().max()
    assert (euler_sample(trajectory[0], sigmas, gaussian_denoiser) - x0).abs().max() < round_trip_error


def test_clean_latent_noise_is_read_at_the_first_level():
    calls = []

    def recording(x, sigma):
        calls.append(sigma[0].item())
        return torch.zeros_like(x)

    sigmas = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    trajectory = ddim_invert(torch.ones(1, 2, dtype=torch.float64), sigmas, recording)
    assert calls == [1.0, 1.0, 2.0]
    # D ≡ 0 makes ε = x/σ: 0 → 1 doubles x (read at σ=1), 1 → 2 doubles, 2 → 3 grows by 3/2.
    assert [t[0, 0].item() for t in trajectory] == [6.0, 4.0, 2.0, 1.0]


def test_progress_and_cancel():
    reported = []
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    ddim_invert(torch.zeros(1, 2), sigmas, lambda x, s: x, progress=lambda *args: reported.append(args))
    assert reported == [(1, 2), (2, 2)]

    class Cancelled(Exception):
        pass

    calls = []

    def cancel_after_one():
        if calls:
            raise Cancelled

    def denoise(x, sigma):
        calls.append(sigma)
        return x

    with pytest.raises(Cancelled):
        ddim_invert(torch.zeros(1, 2), torch.tensor([3.0, 2.0, 1.0, 0.0]), denoise, check_cancel=cancel_after_one)
    assert len(calls) == 1


@pytest.mark.parametrize("sigmas", [[1.0, 2.0, 0.0], [1.0], [2.0, 1.0, -0.5], [2.0, 2.0, 0.0], [float("nan"), 0.0]])
def test_bad_sigmas_are_rejected(sigmas):
    with pytest.raises(Pix2GifInputError, match="sigmas"):
        ddim_invert(torch.zeros(1, 2), torch.tensor(sigmas), lambda x, s: x)


def test_trajectory_sigmas_must_match_the_video_pass():
    sigmas = sd15_sigmas(20)
    check_trajectory_sigmas(sigmas, sigmas.float())
    with pytest.raises(Pix2GifInputError, match="recorded over 20 steps but the video pass samples 25"):
        check_trajectory_sigmas(sigmas, sd15_sigmas(25))
    shifted = sigmas.clone()
    shifted[3] *= 1.01
    with pytest.raises(Pix2GifInputError, match="step 3"):
        check_trajectory_sigmas(sigmas, shifted)
