"""Layers injected into the host UNet: cross-frame GroupNorm, frame context, noise schedules."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatediff.injection import CrossFrameGroupNorm, FrameContext
from pix2gif_core.diffusion.noise_schedule import betas, sigmas_from_betas


def reference_cross_frame_norm(x: torch.Tensor, frames: int, groups: int, weight, bias, eps: float):
    """Statistics per (video, group) over channels-in-group × frames × pixels, written out by hand."""
    b = x.shape[0] // frames
    c, h, w = x.shape[1:]
    v = x.reshape(b, frames, groups, c // groups, h, w)
    mean = v.mean(dim=(1, 3, 4, 5), keepdim=True)
    var = v.var(dim=(1, 3, 4, 5), unbiased=False, keepdim=True)
    normed = ((v - mean) / torch.sqrt(var + eps)).reshape(b * frames, c, h, w)
    return normed * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)


def test_cross_frame_groupnorm_matches_the_reference():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2 * 5, 8, 3, 3, dtype=torch.float64) * 3 + 1
    layer = CrossFrameGroupNorm(norm, FrameContext(video_length=5))
    expected = reference_cross_frame_norm(x, 5, 4, norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    assert not torch.allclose(layer(x), norm(x)), "cross-frame statistics must differ from per-frame ones"


def test_cross_frame_groupnorm_of_one_frame_is_the_plain_groupnorm():
    norm = torch.nn.GroupNorm(2, 4).double()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(CrossFrameGroupNorm(norm, FrameContext(video_length=1))(x), norm(x))


def test_frame_context_refuses_a_batch_it_cannot_split():
    with pytest.raises(Pix2GifInputError, match="cannot be split"):
        FrameContext(video_length=4).frames_in(6, "layer")
    with pytest.raises(Pix2GifInputError):
        FrameContext().frames_in(6, "layer")


def test_schedules_match_their_definitions():
    animatediff = betas("sqrt_linear")
    assert animatediff[0].item() == pytest.approx(0.00085) and animatediff[-1].item() == pytest.approx(0.012)
    assert torch.allclose(animatediff.diff(), animatediff.diff()[0].expand(999))
    sd = betas("linear")
    assert torch.allclose(sd.sqrt().diff(), sd.sqrt().diff()[0].expand(999))
    sigma = sigmas_from_betas(animatediff)
    alpha_bar = torch.cumprod(1 - animatediff, 0)
    torch.testing.assert_close(sigma ** 2 * alpha_bar, 1 - alpha_bar)
    with pytest.raises(Pix2GifInputError, match="unknown"):
        betas("cosine")
