"""I-MSE, Follow-Your-Click's first-frame fidelity metric: how far the clip's first frame is from the input image.

Mean squared error over every pixel and RGB channel, pixel values in [0, 1] (so 0 = identical, 1 = black against
white everywhere; multiply by 255² = 65025 for the 8-bit scale). The paper defines it as "the MSE between the
first frame and the input frame"; its evaluation code was never released.
"""
from __future__ import annotations

import torch

from ..errors import Pix2GifInputError


def first_frame_mse(frames: torch.Tensor, image: torch.Tensor) -> float:
    """I-MSE of ``frames`` (F, H, W, C ≥ 3) against ``image`` (H, W, C ≥ 3), both RGB in [0, 1] (extra channels,
    e.g. alpha, are ignored); computed in float64."""
    first, reference = frames[0, ..., :3], image[..., :3]
    if first.shape != reference.shape:
        raise Pix2GifInputError(f"the first frame is {first.shape[1]}×{first.shape[0]} but the image is "
                                f"{reference.shape[1]}×{reference.shape[0]}; resize one to the other's size "
                                "(e.g. ImageScale) before measuring")
    difference = first.double() - reference.to(first.device).double()
    return float(difference.square().mean())
