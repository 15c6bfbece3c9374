"""I-MSE (first frame vs input image) against a numpy computation written from the definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.metrics.first_frame_error import first_frame_mse


def _clip(seed: int, frames: int = 3, height: int = 12, width: int = 20, channels: int = 3) -> torch.Tensor:
    return torch.rand(frames, height, width, channels, generator=torch.Generator().manual_seed(seed))


def test_a_clip_starting_with_the_image_has_zero_error():
    clip = _clip(0)
    assert first_frame_mse(clip, clip[0].clone()) == 0.0


def test_error_equals_numpy_mean_of_squared_rgb_differences():
    clip, image = _clip(1), _clip(2, frames=1)[0]
    first = clip[0].numpy().astype(np.float64)
    expected = np.mean((first - image.numpy().astype(np.float64)) ** 2)
    assert first_frame_mse(clip, image) == pytest.approx(expected, rel=1e-12)
    assert expected > 0.1  # random frames really differ


def test_alpha_is_ignored_and_later_frames_do_not_count():
    clip, image = _clip(3, channels=4), _clip(4, frames=1, channels=4)[0]
    changed = clip.clone()
    changed[..., 3] = 0.0
    changed[1:] = 0.0
    expected = np.mean((clip[0, ..., :3].numpy().astype(np.float64) - image[..., :3].numpy()) ** 2)
    assert first_frame_mse(changed, image) == pytest.approx(expected, rel=1e-12)


def test_a_black_frame_against_white_is_one():
    assert first_frame_mse(torch.zeros(2, 4, 4, 3), torch.ones(4, 4, 3)) == 1.0


def test_another_size_is_refused_naming_both_sizes():
    with pytest.raises(Pix2GifInputError, match="20×12 but the image is 16×12"):
        first_frame_mse(_clip(5), _clip(6, frames=1, width=16)[0])
