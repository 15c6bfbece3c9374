"""Noise-prior blend against a float64 reference."""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.motion_inversion.noise_prior import blend_noise_prior, noise_prior_weights


def test_default_blend_is_sqrt_half_each() -> None:
    inverted, noise = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    want = math.sqrt(0.5) * inverted.double() + math.sqrt(0.5) * noise.double()
    assert float((blend_noise_prior(inverted, noise).double() - want).abs().max()) < 1e-6


def test_custom_weights_and_dtype_follow_inverted_latent() -> None:
    inverted, noise = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3)
    got = blend_noise_prior(inverted, noise, prior_weight=0.3, noise_weight=0.9)
    assert got.dtype == torch.float64
    assert float((got - (0.3 * inverted + 0.9 * noise.double())).abs().max()) < 1e-12


def test_default_weights_keep_unit_variance() -> None:
    g = torch.Generator().manual_seed(0)
    inverted, noise = torch.randn(400_000, generator=g), torch.randn(400_000, generator=g)
    assert float(blend_noise_prior(inverted, noise).var()) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("prior", [0.0, 0.25, 0.5, 1.0])
def test_prior_weights_square_sum_to_one(prior: float) -> None:
    a, b = noise_prior_weights(prior)
    assert a == pytest.approx(math.sqrt(prior)) and a * a + b * b == pytest.approx(1.0)


def test_bad_inputs_raise_named_errors() -> None:
    with pytest.raises(Pix2GifInputError, match="inverted latent"):
        blend_noise_prior(torch.zeros(16, 4, 8, 8), torch.zeros(24, 4, 8, 8))
    with pytest.raises(Pix2GifInputError, match="noise_weight"):
        blend_noise_prior(torch.zeros(2), torch.zeros(2), noise_weight=float("nan"))
    with pytest.raises(Pix2GifInputError, match="noise_prior"):
        noise_prior_weights(1.5)
