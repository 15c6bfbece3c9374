"""First-frame pinning: recording, inversion, replay order, and frame 1 of a pinned video landing on the image.

The samplers here are written out independently of ComfyUI (k-diffusion's Euler and Heun without churn, and
DPM-Solver++(2M)); the toy "video model" denoises every frame with the exact denoiser of a Gaussian data set.
"""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.diffusion.ddim_inversion import ddim_invert
from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatezero.first_frame_pinning import (FirstFrameTrajectory, PinnedEvaluation, TrajectoryRecorder,
                                                          check_latent_size, inverted_trajectory, pin_first_frames)
from pix2gif_core.animatezero.trajectory_replay import TrajectoryReplay
from pix2gif_core.diffusion.noise_schedule import betas, sigmas_from_betas

MEAN, STD = 0.3, 0.5
FRAMES = 3
SHAPE = (1, 4, 3, 3)
NOISE_RANGE = (0.03, 14.6)


def schedule(steps: int) -> torch.Tensor:
    table = sigmas_from_betas(betas("linear"))
    return torch.cat([table[torch.linspace(999, 0, steps).round().long()], torch.zeros(1, dtype=table.dtype)])


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    sigma = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    return MEAN + STD**2 / (STD**2 + sigma**2) * (x - MEAN)


def euler(x, sigmas, model):
    for high, low in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x = x + (x - model(x, high)) / high * (low - high)
    return x


def heun(x, sigmas, model):
    for high, low in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        slope = (x - model(x, high)) / high
        predicted = x + slope * (low - high)
        if low == 0:
            x = predicted
        else:
            x = x + (slope + (predicted - model(predicted, low)) / low) / 2 * (low - high)
    return x


def dpmpp_2m(x, sigmas, model):
    previous = None
    levels = sigmas.tolist()
    for i, (high, low) in enumerate(zip(levels[:-1], levels[1:])):
        denoised = model(x, high)
        if low == 0:
            return denoised
        h = math.log(high / low)
        combined = denoised
        if previous is not None:
            r = math.log(levels[i - 1] / high) / h
            combined = (1 + 1 / (2 * r)) * denoised - previous / (2 * r)
        x = (low / high) * x - math.expm1(-h) * combined
        previous = denoised
    return x


def recorded_pass(sampler, noise, sigmas) -> tuple[torch.Tensor, FirstFrameTrajectory]:
    """A one-image pass of ``sampler`` that records every evaluation, as the First Frame node does."""
    recorder = TrajectoryRecorder()

    def model(x, sigma):
        denoised = gaussian_denoiser(x, torch.full((1,), sigma, dtype=x.dtype))
        recorder.record(torch.tensor([sigma]), x, denoised)
        return denoised

    image = sampler(noise * sigmas[0], sigmas, model)
    return image, recorder.trajectory(sigmas, settings=f"{len(sigmas) - 1} steps, test", noise_range=NOISE_RANGE)


def pinned_video_model(replay: TrajectoryReplay, seen: list | None = None):
    """A video model whose frame 0 follows ``replay`` (input and output pinned), other frames denoised alone."""

    def model(x, sigma):
        index = replay.select(torch.tensor(sigma))
        position = replay.read(index)
        if seen is not None:
            seen.append(replay.departs(x[:1], position))
        state, recorded_denoised = replay.latents_at(index)
        pinned = pin_first_frames(x, FRAMES, state)
        denoised = pin_first_frames(gaussian_denoiser(pinned, torch.full((FRAMES,), sigma, dtype=x.dtype)), FRAMES,
                                    recorded_denoised)
        replay.evaluation_done()
        return denoised

    return model


def test_pin_first_frames_replaces_frame_zero_of_every_video_only():
    batch = torch.arange(2 * FRAMES * 2, dtype=torch.float32).reshape(2 * FRAMES, 2, 1, 1)
    original = batch.clone()
    pinned = pin_first_frames(batch, FRAMES, torch.full((1, 2, 1, 1), -1.0, dtype=torch.float64))
    expected = original.clone()
    expected[0], expected[FRAMES] = -1.0, -1.0
    assert torch.equal(pinned, expected) and pinned.dtype == torch.float32
    assert torch.equal(batch, original), "the sampler's latent is never modified in place"


@pytest.mark.parametrize("sampler", [euler, heun, dpmpp_2m])
def test_generated_first_frame_is_retraced_bit_exactly(sampler):
    sigmas = schedule(6)
    noise = torch.randn(FRAMES, *SHAPE[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    image, trajectory = recorded_pass(sampler, noise[:1], sigmas)
    assert trajectory.origin == "generated" and trajectory.steps == 6 and trajectory.latent_shape == SHAPE[1:]
    departures = []
    video = sampler(noise * sigmas[0], sigmas, pinned_video_model(TrajectoryReplay(trajectory), departures))
    assert torch.equal(video[0], image[0])
    assert not any(departures), "same start noise and a deterministic sampler never leave the trajectory"
    alone = sampler(noise * sigmas[0], sigmas, lambda x, s: gaussian_denoiser(x, torch.full((FRAMES,), s,
                                                                                          dtype=x.dtype)))
    assert torch.equal(video[1:], alone[1:]), "frames of this toy model are independent: only frame 0 is pinned"


@pytest.mark.parametrize("sampler", [euler, heun, dpmpp_2m])
def test_inverted_first_frame_ends_on_the_image_from_any_start_noise(sampler):
    sigmas = schedule(8)
    x0 = MEAN + STD * torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    states = ddim_invert(x0, sigmas, gaussian_denoiser)
    trajectory = inverted_trajectory(x0, sigmas, states, settings="8 steps, test", noise_range=NOISE_RANGE)
    assert [e.sigma for e in trajectory.evaluations] == sigmas[:-1].tolist()
    assert all(e.state is s and e.denoised is x0 for e, s in zip(trajectory.evaluations, states))
    noise = torch.randn(FRAMES, *SHAPE[1:], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    departures = []
    video = sampler(noise * sigmas[0], sigmas, pinned_video_model(TrajectoryReplay(trajectory), departures))
    torch.testing.assert_close(video[0], x0[0], rtol=0, atol=1e-12)
    assert not any(departures), "an inverted trajectory starts from the video's own noise by design"


def test_latent_size_check_names_both_sizes_in_pixels():
    trajectory = FirstFrameTrajectory((9.0, 0.0), (PinnedEvaluation(9.0, torch.zeros(SHAPE), torch.zeros(SHAPE)),),
                                      "generated", "", NOISE_RANGE)
    check_latent_size(trajectory, SHAPE[1:])
    with pytest.raises(Pix2GifInputError, match=r"first frame is 24×24 px .* video latent is 64×32 px"):
        check_latent_size(trajectory, (4, 4, 8))


@pytest.mark.parametrize("state,denoised", [(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)),
                                            (torch.zeros(SHAPE), torch.zeros(1, 4, 3, 4))])
def test_trajectory_holds_one_latent_per_evaluation(state, denoised):
    with pytest.raises(Pix2GifInputError, match="one latent"):
        FirstFrameTrajectory((1.0, 0.0), (PinnedEvaluation(1.0, state, denoised),), "generated", "", NOISE_RANGE)
    with pytest.raises(Pix2GifInputError, match="empty"):
        FirstFrameTrajectory((1.0, 0.0), (), "generated", "", NOISE_RANGE)


def test_recorder_refuses_a_batch():
    with pytest.raises(Pix2GifInputError, match="batch of 2"):
        TrajectoryRecorder().record(torch.ones(2), torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))
