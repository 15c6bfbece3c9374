from __future__ import annotations

import torch

from pix2gif_core.i2vgen_xl.conditioning import cover_crop


def test_a_wide_image_is_scaled_to_the_height_and_centre_cropped():
    image = torch.zeros(1, 40, 120, 3)
    image[:, :, 40:80] = 1.0  # the middle third is white
    out = cover_crop(image, 20, 20)  # scale 0.5 → 20×60, keep columns 20..40 = the white third
    assert out.shape == (1, 20, 20, 3)
    assert out[:, :, 2:-2].min() > 0.99


def test_a_tall_image_is_scaled_to_the_width():
    image = torch.linspace(0, 1, 80).view(1, 80, 1, 1).expand(1, 80, 20, 3).contiguous()
    out = cover_crop(image, 40, 40)  # scale 2 → 160×40, rows 60..100 of the ramp: values ≈ 0.375..0.625
    assert out.shape == (1, 40, 40, 3)
    assert abs(out[0, 0, 0, 0].item() - 0.375) < 0.02 and abs(out[0, -1, 0, 0].item() - 0.625) < 0.02
