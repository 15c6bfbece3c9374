import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.follow_your_click.motion_scale_mask import MotionScaleMask, latent_motion_scale, motion_scale_masks


def test_scale_is_one_inside_and_background_outside():
    mask = torch.zeros(16, 24)
    mask[:8, 8:16] = 1  # latent cell (0, 1)
    mask[8:16, 16:20] = 1  # half of cell (1, 2)
    for background in (0.0, 1.0):
        scale = latent_motion_scale(mask, (2, 3), background, 1.0)
        assert scale[0, 1] == 1.0 and scale[0, 0] == background and scale[1, 0] == background
        assert scale[1, 2] == pytest.approx(background + (1 - background) * 0.5)
    scale = latent_motion_scale(mask, (2, 3), 0.25, 1.0)
    assert scale[0, 1] == 1.0 and scale[0, 0] == pytest.approx(0.25) and scale[1, 2] == pytest.approx(0.625)
    halved = latent_motion_scale(mask, (2, 3), 0.0, 0.5)
    assert halved[0, 1] == pytest.approx(0.5) and halved[0, 0] == 0.0, "strength scales the inside"


def test_coarser_feature_maps_read_the_area_mean_of_their_cells():
    latent = torch.rand(6, 5)
    masks = MotionScaleMask(latent)
    assert torch.equal(masks.at((6, 5)), latent)
    torch.testing.assert_close(masks.at((3, 5)), (latent[0::2] + latent[1::2]) / 2)
    torch.testing.assert_close(masks.at((1, 1)), latent.mean().view(1, 1))
    odd = masks.at((3, 3))  # 5 columns → 3: adaptive windows [0, 2), [1, 4), [3, 5)
    torch.testing.assert_close(odd[0, 1], latent[0:2, 1:4].mean())
    like = torch.zeros(1, dtype=torch.float64)
    per_position = masks((3, 5), like)
    assert per_position.dtype == torch.float64 and per_position.shape == (15,)
    torch.testing.assert_close(per_position, masks.at((3, 5)).flatten().double())


def test_bad_background_and_mask_size_are_refused():
    with pytest.raises(Pix2GifInputError, match="background_motion 1.5 is outside 0…1"):
        latent_motion_scale(torch.zeros(16, 16), (2, 2), 1.5, 1.0)
    with pytest.raises(Pix2GifInputError, match="mask is 16×16 px but the video is 24×16 px"):
        motion_scale_masks(torch.zeros(16, 16), 0.0, 1.0)((2, 3))
