import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.follow_your_click.regional_confinement import confine, latent_region, shared_noise


def test_hard_region_marks_a_cell_with_any_pixel_inside():
    mask = torch.zeros(16, 24)
    mask[9, 17] = 1
    region = latent_region(mask, (2, 3), "hard", 1.0)
    assert torch.equal(region, torch.tensor([[0.0, 0, 0], [0, 0, 1]]))
    assert torch.equal(latent_region(mask, (2, 3), "hard", 0.5), region * 0.5)


def test_feathered_region_is_the_block_mean():
    mask = torch.rand(16, 8)
    region = latent_region(mask, (2, 1), "feathered", 1.0)
    torch.testing.assert_close(region, torch.stack([mask[:8].mean(), mask[8:].mean()]).view(2, 1))


def test_mask_of_another_size_is_refused():
    with pytest.raises(Pix2GifInputError, match="mask is 24×16 px but the video is 32×16 px"):
        latent_region(torch.zeros(16, 24), (2, 4), "hard", 1.0)


def test_confine_is_exact_at_zero_and_one():
    batch = torch.randn(2 * 3, 4, 2, 2)
    region = torch.tensor([[0.0, 1.0], [0.25, 1.0]])
    out = confine(batch, 3, region)
    videos, confined = batch.view(2, 3, 4, 2, 2), out.view(2, 3, 4, 2, 2)
    for v in range(2):
        for f in range(3):
            assert torch.equal(confined[v, f, :, 0, 0], videos[v, 0, :, 0, 0])
            assert torch.equal(confined[v, f, :, :, 1], videos[v, f, :, :, 1])
            expected = 0.25 * videos[v, f, :, 1, 0] + 0.75 * videos[v, 0, :, 1, 0]
            torch.testing.assert_close(confined[v, f, :, 1, 0], expected)
    anchor = torch.randn(1, 4, 2, 2)
    pinned = confine(batch, 3, region, anchor).view(2, 3, 4, 2, 2)
    assert torch.equal(pinned[1, 2, :, 0, 0], anchor[0, :, 0, 0])


def test_shared_noise_only_where_region_is_zero():
    noise = torch.randn(4, 4, 2, 2)
    region = torch.tensor([[0.0, 0.1], [1.0, 0.0]])
    shared = shared_noise(noise, region)
    for f in range(4):
        assert torch.equal(shared[f, :, 0, 0], noise[0, :, 0, 0]) and torch.equal(shared[f, :, 1, 1], noise[0, :, 1, 1])
        assert torch.equal(shared[f, :, 0, 1], noise[f, :, 0, 1]) and torch.equal(shared[f, :, 1, 0], noise[f, :, 1, 0])
