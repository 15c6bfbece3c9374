"""The mask a click picker shows over its photo: the object tinted, the background dimmed.

``overlay = image · (1 − TINT_WEIGHT·m) + TINT · TINT_WEIGHT·m`` inside (``m`` the mask), times
``1 − DIM·(1 − m)`` outside, so a soft (feathered) edge blends between the two.
"""
from __future__ import annotations

import torch

#: RGB in [0, 1] the object is tinted with (a light blue that reads on photos and on grey)
TINT = (0.25, 0.6, 1.0)
TINT_WEIGHT = 0.45
#: share of brightness taken from the background
DIM = 0.45


def mask_overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``image`` ``(H, W, 3)`` in [0, 1] with ``mask`` ``(H, W)`` in [0, 1] shown over it → ``(H, W, 3)`` float32."""
    rgb = image[..., :3].float().clamp(0, 1)
    weight = mask.to(rgb.device, torch.float32).clamp(0, 1)[..., None]
    tint = torch.tensor(TINT, dtype=torch.float32, device=rgb.device)
    tinted = rgb * (1 - TINT_WEIGHT * weight) + tint * (TINT_WEIGHT * weight)
    return tinted * (1 - DIM * (1 - weight))
