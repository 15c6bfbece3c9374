"""Soft confinement: a motion-scale mask on the motion modules' temporal attention (AnimateDiff-Evolved's motion
scale given as a mask, its ``scale_multival``), for a region that moves fully while the rest moves less.

At every spatial position of every motion module the temporal attention's keys are multiplied by that position's
scale – its softmax logits are – as AnimateDiff-Evolved does (``k *= scale_mask``): 1 = the motion module as
trained; 0 = every frame attends to all frames equally (their mean: the module's motion scale 0, no motion of
its own there); in between, flatter attention and less motion. The scale is 1 inside the mask and ``background``
outside: ``s = 1 − (1 − background)·(1 − m)``, with ``m`` the mask's mean over each 8×8-pixel latent cell times
``strength`` – exactly 1 where ``m`` = 1, and exactly ``background`` where ``m`` = 0 for background 0 or 1 (within
float rounding otherwise). The motion modules at 1/2, 1/4 and 1/8 of the latent read the area mean of the latent
cells they cover (AnimateDiff-Evolved resizes its mask bilinearly; the area mean keeps 1 and ``background``
exact away from the edge).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import Pix2GifInputError
from .regional_confinement import latent_region


def check_background(background: float) -> float:
    """``background`` if it is a number in [0, 1], else :class:`Pix2GifInputError`."""
    if not 0.0 <= background <= 1.0:
        raise Pix2GifInputError(f"background_motion {background:g} is outside 0…1; 0 = the frames' mean outside the "
                                "mask (no motion of its own), 1 = the motion model's own motion everywhere")
    return float(background)


def latent_motion_scale(mask: Tensor, latent_hw: tuple[int, int], background: float, strength: float) -> Tensor:
    """``(h, w)`` motion scales at the latent grid for a pixel ``mask`` ``(8h, 8w)``: 1 inside, ``background``
    outside (see the module docstring); raises :class:`Pix2GifInputError` for another mask size."""
    region = latent_region(mask, latent_hw, "feathered", strength)
    return 1 - (1 - check_background(background)) * (1 - region)


class MotionScaleMask:
    """The motion scale of one latent size at every feature size, as :class:`~..animatediff.injection.KeyScales`
    for the injected motion modules: ``(h·w,)`` per call, cached per size, dtype and device."""

    def __init__(self, latent_scale: Tensor) -> None:
        self.latent_scale = latent_scale.float()
        self._cached: dict[tuple, Tensor] = {}

    def at(self, feature_hw: tuple[int, int]) -> Tensor:
        """``(h, w)`` scales of a feature map ``feature_hw``: the area mean of the latent cells it covers."""
        if feature_hw == tuple(self.latent_scale.shape):
            return self.latent_scale
        return F.adaptive_avg_pool2d(self.latent_scale[None, None], feature_hw)[0, 0]

    def __call__(self, feature_hw: tuple[int, int], like: Tensor) -> Tensor:
        key = (feature_hw, like.dtype, like.device)
        if key not in self._cached:
            self._cached[key] = self.at(feature_hw).flatten().to(dtype=like.dtype, device=like.device)
        return self._cached[key]


def motion_scale_masks(mask: Tensor, background: float, strength: float):
    """``latent_hw → MotionScaleMask`` for a pixel ``mask`` ``(H, W)``, one per latent size (checked then)."""
    masks: dict[tuple[int, int], MotionScaleMask] = {}

    def for_latent(latent_hw: tuple[int, int]) -> MotionScaleMask:
        if latent_hw not in masks:
            masks[latent_hw] = MotionScaleMask(latent_motion_scale(mask, latent_hw, background, strength))
        return masks[latent_hw]

    return for_latent

