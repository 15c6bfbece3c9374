"""Follow-Your-Click's conditioning channels against the table of methods.md §5.3, built here cell by cell:
channel 0 = region mask on every frame (nearest resize, non-zero → 1) or 1 on frame 0 only; channels 1–4 = the
photo's latent on frame 0, zeros on the other frames; first-frame masking zeroes a fraction of frame 0's cells."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.follow_your_click.first_frame_conditioning import (
    first_frame_conditioning,
    latent_region_mask,
    masked_first_frame,
)

FRAMES, H, W = 5, 6, 7


def reference(latent: np.ndarray, frames: int, pixel_mask: np.ndarray | None) -> np.ndarray:
    """(frames, 5, h, w) from the table; the mask given in pixels (8 per latent cell)."""
    channels, height, width = latent.shape
    out = np.zeros((frames, 1 + channels, height, width), dtype=np.float32)
    for frame in range(frames):
        for row in range(height):
            for column in range(width):
                if pixel_mask is None:
                    out[frame, 0, row, column] = 1.0 if frame == 0 else 0.0
                else:  # nearest: the source pixel floor(cell · 8), then any non-zero value → 1
                    out[frame, 0, row, column] = 1.0 if pixel_mask[row * 8, column * 8] != 0 else 0.0
                if frame == 0:
                    out[frame, 1:, row, column] = latent[:, row, column]
    return out


@pytest.fixture
def latent() -> torch.Tensor:
    return torch.randn(4, H, W, generator=torch.Generator().manual_seed(0))


def test_without_a_mask_the_mask_channel_marks_frame_0(latent):
    ours = first_frame_conditioning(latent, FRAMES, None)
    np.testing.assert_array_equal(ours.numpy(), reference(latent.numpy(), FRAMES, None))


def test_a_region_mask_is_repeated_on_every_frame_and_any_non_zero_pixel_counts(latent):
    generator = torch.Generator().manual_seed(1)
    pixels = (torch.rand(8 * H, 8 * W, generator=generator) > 0.6).float() * torch.rand(8 * H, 8 * W,
                                                                                        generator=generator)
    ours = first_frame_conditioning(latent, FRAMES, latent_region_mask(pixels, (H, W)))
    np.testing.assert_array_equal(ours.numpy(), reference(latent.numpy(), FRAMES, pixels.numpy()))
    assert 0 < ours[:, 0].mean() < 1


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_first_frame_masking_hides_that_fraction_of_cells_in_every_channel(latent, ratio):
    masked = masked_first_frame(latent, ratio, torch.Generator().manual_seed(2)).numpy()
    hidden = np.all(masked == 0, axis=0)
    assert hidden.sum() == round(ratio * H * W)
    np.testing.assert_array_equal(masked[:, ~hidden], latent.numpy()[:, ~hidden])


def test_first_frame_masking_is_reproducible_per_seed_and_differs_between_seeds(latent):
    def hidden(seed: int) -> torch.Tensor:
        return masked_first_frame(latent, 0.5, torch.Generator().manual_seed(seed)) == 0

    assert torch.equal(hidden(3), hidden(3))
    assert not torch.equal(hidden(3), hidden(4))


def test_a_masking_ratio_outside_0_1_is_refused(latent):
    with pytest.raises(Pix2GifInputError, match="first_frame_masking"):
        masked_first_frame(latent, 1.5, torch.Generator())
