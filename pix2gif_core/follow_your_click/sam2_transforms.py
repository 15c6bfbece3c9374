"""SAM 2's input and output transforms, without torchvision (transformers' SAM 2 image processor imports it).

From the official SAM 2 code (``sam2/utils/transforms.py``, ``SAM2Transforms``): the image, scaled to [0, 1], is
resized to the model's square input (bilinear, antialiased, aspect ratio not kept) and normalised with ImageNet's
mean and std; click coordinates are scaled by input size / image size per axis; the low-resolution mask logits are
upsampled to the image bilinearly (``align_corners=False``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .click_points import Clicks

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Sam2Prompts:
    """Builds ``Sam2Model`` inputs for one image and its clicks and upsamples its masks; ``input_size`` in pixels."""

    input_size: int

    def model_inputs(self, image: np.ndarray, clicks: Clicks) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        """``pixel_values`` ``(1, 3, S, S)``, ``input_points`` ``(1, 1, N, 2)`` in input pixels, ``input_labels``
        ``(1, 1, N)`` for ``image`` ``(H, W, 3)`` uint8; and ``(H, W)`` for :meth:`mask_logits`."""
        height, width = image.shape[:2]
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
        pixels = F.interpolate(pixels, (self.input_size, self.input_size), mode="bilinear", align_corners=False,
                               antialias=True)
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        points = torch.tensor(clicks.points, dtype=torch.float32)
        points = points * torch.tensor([self.input_size / width, self.input_size / height])
        return ({"pixel_values": (pixels - mean) / std, "input_points": points[None, None],
                 "input_labels": torch.tensor(clicks.labels, dtype=torch.int64)[None, None]}, (height, width))

    def mask_logits(self, pred_masks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """``(M, H, W)`` logits of ``pred_masks`` ``(1, 1, M, h, w)`` at the image's size."""
        return F.interpolate(pred_masks[0].float(), image_hw, mode="bilinear", align_corners=False)[0]
