"""Motion confined to a region (Follow-Your-Click's "only the clicked object moves") for any motion model.

The region is a mask over the image, reduced to the latent grid (:func:`latent_region`): *hard* marks a latent
cell inside when any pixel of its 8×8 block is (mask > 0.5), so outside means fully outside; *feathered* keeps
the mean of the block (a soft edge). Outside the region every frame is frame 0 of its video – the model sees frame
0's latent there (:func:`confine` on its input) and returns frame 0's prediction there (:func:`confine` on its
output) – and every frame starts from frame 0's noise where the region is exactly 0 (:func:`shared_noise`), so a
deterministic sampler keeps those latents equal to frame 0's bit for bit. Inside, the motion model acts freely;
``strength`` scales the region (0 = frame 0 everywhere, a still clip).

Blends are ``own·m + anchor·(1 − m)``: exactly ``own`` where m = 1 and exactly ``anchor`` where m = 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import Pix2GifInputError

CONFINEMENTS = ("hard", "feathered")
LATENT_SCALE = 8
HARD_THRESHOLD = 0.5


def latent_region(mask: Tensor, latent_hw: tuple[int, int], confinement: str, strength: float) -> Tensor:
    """``(h, w)`` region weights in [0, 1] for a pixel ``mask`` ``(H, W)`` of an image whose latent is
    ``latent_hw``, scaled by ``strength``; raises :class:`Pix2GifInputError` unless ``H, W = 8h, 8w``."""
    height, width = latent_hw
    if tuple(mask.shape) != (height * LATENT_SCALE, width * LATENT_SCALE):
        raise Pix2GifInputError(
            f"mask is {mask.shape[1]}×{mask.shape[0]} px but the video is {width * LATENT_SCALE}×"
            f"{height * LATENT_SCALE} px (latent {width}×{height}); make the mask from the image at the video's size "
            "(scale the image before Click Mask, or scale the mask with the image)")
    if confinement not in CONFINEMENTS:
        raise Pix2GifInputError(f"confinement '{confinement}' is unknown; choose one of {', '.join(CONFINEMENTS)}")
    pixels = mask.float()[None, None]
    if confinement == "hard":
        region = F.max_pool2d((pixels > HARD_THRESHOLD).float(), LATENT_SCALE)
    else:
        region = F.avg_pool2d(pixels, LATENT_SCALE).clamp(0, 1)
    return region[0, 0] * strength


def confine(batch: Tensor, frames: int, region: Tensor, anchor: Tensor | None = None) -> Tensor:
    """``batch`` ``(videos·frames, C, h, w)`` with every frame blended towards its video's anchor outside
    ``region`` ``(h, w)``: ``frame·m + anchor·(1 − m)``. ``anchor``: ``(1, C, h, w)`` for all videos, or None for
    frame 0 of each video."""
    if frames < 1 or batch.shape[0] % frames:
        raise ValueError(f"a batch of {batch.shape[0]} latents is not a whole number of {frames}-frame videos")
    videos = batch.view(-1, frames, *batch.shape[1:])
    anchors = videos[:, :1] if anchor is None else anchor.to(batch)[None]
    m = region.to(batch)
    return (videos * m + anchors * (1 - m)).view_as(batch)


def shared_noise(noise: Tensor, region: Tensor) -> Tensor:
    """``noise`` ``(frames, C, h, w)`` of one video with frame 0's noise wherever ``region`` ``(h, w)`` is 0."""
    outside = (region == 0).to(noise.device)
    return torch.where(outside, noise[:1], noise)
