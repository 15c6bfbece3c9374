"""Preparing I2VGen-XL's image inputs as the reference pipeline does (diffusers ``_center_crop_wide``)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cover_crop(image: Tensor, width: int, height: int) -> Tensor:
    """``image (B, H, W, C)`` in [0, 1] scaled (antialiased bilinear) until it covers ``width × height``, then
    centre-cropped to it; returns ``(B, height, width, C)`` in the input's dtype."""
    _, h, w, _ = image.shape
    scale = max(width / w, height / h)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    resized = F.interpolate(image.movedim(-1, 1).float(), size=size, mode="bilinear", antialias=True,
                            align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return resized[:, :, top:top + height, left:left + width].movedim(1, -1).clamp(0, 1).to(image.dtype)
