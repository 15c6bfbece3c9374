import numpy as np
import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.follow_your_click.region_motion import region_motion


def clip_with_moving_square(shift: int, frames: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured background that stays and a textured 24-px square moving ``shift`` px right per frame."""
    rng = np.random.default_rng(0)
    background = torch.from_numpy(rng.random((64, 96, 3))).float()
    patch = torch.from_numpy(rng.random((24, 24, 3))).float()
    background = torch.nn.functional.avg_pool2d(background.permute(2, 0, 1)[None], 3, 1, 1)[0].permute(1, 2, 0)
    patch = torch.nn.functional.avg_pool2d(patch.permute(2, 0, 1)[None], 3, 1, 1)[0].permute(1, 2, 0)
    clip = []
    for index in range(frames):
        frame = background.clone()
        frame[20:44, 20 + shift * index:44 + shift * index] = patch
        clip.append(frame)
    mask = torch.zeros(64, 96)
    mask[20:44, 20:44] = 1  # the square in frame 0
    return torch.stack(clip), mask


def test_moving_square_inside_still_background_outside():
    clip, mask = clip_with_moving_square(2)
    result = region_motion(clip, mask)
    # frames 1 and 2 are 2 and 4 px from frame 0: mean 3 px inside, nothing outside
    assert result.inside == pytest.approx(3.0, abs=0.3)
    # LK windows (15 px) of background points next to the square see part of it move: a small leak, not 0
    assert result.outside == pytest.approx(0.0, abs=0.15)
    assert result.points_inside > 5 and result.points_outside > 20


def test_the_point_counts_are_the_points_the_means_average():
    """A frame into which some points are lost (frame 0 rolled 6 px right: those near the right edge leave the
    image) drops them from that frame only; they still count in the other frames' means, so they are counted."""
    clip, mask = clip_with_moving_square(2)
    lost_in_one_frame = torch.cat([clip, torch.roll(clip[:1], shifts=6, dims=2)])
    before, after = region_motion(clip, mask), region_motion(lost_in_one_frame, mask)
    assert (after.points_inside, after.points_outside) == (before.points_inside, before.points_outside)


def test_still_clip_is_zero_and_wrong_mask_size_is_refused():
    clip, mask = clip_with_moving_square(0)
    result = region_motion(clip, mask)
    assert result.inside == pytest.approx(0.0, abs=0.01) and result.outside == pytest.approx(0.0, abs=0.01)
    with pytest.raises(Pix2GifInputError, match="mask is 64×64 px but the frames are 96×64"):
        region_motion(clip, torch.zeros(64, 64))
