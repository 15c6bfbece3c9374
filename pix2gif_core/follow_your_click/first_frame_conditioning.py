"""Follow-Your-Click's first-frame conditioning: the 5 channels concatenated to the noisy latent (methods.md §5.3).

Per frame the UNet reads 9 channels, ``[z_t (4) | mask (1) | first-frame block (4)]``. The mask channel is the
region mask repeated on every frame when one is given (nearest-resized to the latent, any non-zero cell → 1, as
the official script clamps its 0–255 mask image), else 1 on frame 0 and 0 elsewhere. The first-frame block is the
VAE latent of the photo (× 0.18215) on frame 0 and zeros on the other frames; at inference a fraction of its
cells may be zeroed at random ("first-frame masking", the official ``--mask_first_frame`` uses one half). The
same block conditions the cond and the uncond branch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import Pix2GifInputError

CONDITIONING_CHANNELS = 5  # mask (1) + first-frame latent (4)


def latent_region_mask(mask: Tensor, latent_hw: tuple[int, int]) -> Tensor:
    """Region mask ``(H, W)`` in [0, 1] → ``(h, w)`` of 0/1 at latent size: nearest resize, any non-zero → 1."""
    resized = F.interpolate(mask.float()[None, None], size=latent_hw, mode="nearest")[0, 0]
    return (resized > 0).float()


def masked_first_frame(latent: Tensor, ratio: float, generator: torch.Generator) -> Tensor:
    """``latent (4, h, w)`` with ``round(ratio·h·w)`` of its cells, drawn at random, set to 0 in every channel."""
    if not 0.0 <= ratio <= 1.0:
        raise Pix2GifInputError(f"first_frame_masking {ratio}: give a fraction of the image between 0 and 1 "
                                "(0 = off, 0.5 = the official --mask_first_frame)")
    _, height, width = latent.shape
    hidden = torch.randperm(height * width, generator=generator)[:round(ratio * height * width)]
    keep = torch.ones(height * width)
    keep[hidden] = 0.0
    return latent * keep.view(1, height, width).to(latent)


def first_frame_conditioning(first_latent: Tensor, frames: int, region: Tensor | None) -> Tensor:
    """The 5 conditioning channels ``(frames, 5, h, w)`` for ``first_latent (4, h, w)`` (already scaled and, if
    wanted, masked) and ``region`` ``(h, w)`` of 0/1 from :func:`latent_region_mask` (None: no region mask)."""
    channels, height, width = first_latent.shape
    conditioning = torch.zeros(frames, CONDITIONING_CHANNELS, height, width, dtype=first_latent.dtype)
    if region is None:
        conditioning[0, 0] = 1.0
    else:
        conditioning[:, 0] = region.to(first_latent.dtype)
    conditioning[0, 1:1 + channels] = first_latent
    return conditioning
