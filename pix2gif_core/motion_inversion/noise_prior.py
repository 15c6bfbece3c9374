"""Motion Inversion's noise prior: start sampling from DDIM-inverted latents blended with fresh noise.

Motion Inversion (``noise_init/blend_init.py`` ``BlendInit``, methods.md §4.4) initialises z_T as
``√p · z_inv + √(1−p) · ε`` with noise prior p = 0.5. With the default weights √0.5 / √0.5, two independent
unit-variance inputs give a unit-variance result (0.5 + 0.5 = 1), so the blend keeps the noise level the
sampler expects at its first step; in general the variance is ``prior_weight² + noise_weight²``.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..errors import Pix2GifInputError

DEFAULT_NOISE_PRIOR = 0.5


def noise_prior_weights(noise_prior: float = DEFAULT_NOISE_PRIOR) -> tuple[float, float]:
    """Weights (√p, √(1−p)) for a noise prior p in [0, 1]; they keep unit variance (their squares sum to 1)."""
    if not 0.0 <= noise_prior <= 1.0:
        raise Pix2GifInputError(f"noise_prior must be in [0, 1] (got {noise_prior}); 0.5 is Motion Inversion's default.")
    return math.sqrt(noise_prior), math.sqrt(1.0 - noise_prior)


def blend_noise_prior(
    inverted_latent: Tensor,
    noise: Tensor,
    prior_weight: float = math.sqrt(DEFAULT_NOISE_PRIOR),
    noise_weight: float = math.sqrt(1.0 - DEFAULT_NOISE_PRIOR),
) -> Tensor:
    """``prior_weight · inverted_latent + noise_weight · noise``, any shape (e.g. video latents (F, C, h, w)).

    ``inverted_latent``: DDIM-inverted latents at the first sampling timestep; ``noise``: fresh Gaussian noise of
    the same shape. Result dtype/device follow ``inverted_latent``. Defaults √0.5/√0.5 keep unit variance.
    """
    if tuple(inverted_latent.shape) != tuple(noise.shape):
        raise Pix2GifInputError(
            f"inverted latent has shape {tuple(inverted_latent.shape)} but the noise has {tuple(noise.shape)}; "
            "invert the same video (frame count and size) that is being generated."
        )
    for name, weight in (("prior_weight", prior_weight), ("noise_weight", noise_weight)):
        if not math.isfinite(weight):
            raise Pix2GifInputError(f"{name} must be a finite number (got {weight}).")
    return inverted_latent * prior_weight + noise.to(inverted_latent) * noise_weight
