"""Motion Inversion training losses: plain ε-MSE and the appearance-debiased temporal loss.

Layout: ComfyUI video latents are frame-major, (F, C, h, w) for one video; a batch of B videos is
(B·F, C, h, w) with video ``n``'s frame ``f`` at row ``n·F + f`` (pass ``video_length=F``). Losses are computed
in float32 (as the reference's ``.float()``) and averaged over all elements.

Debiased loss (EnVision-Research/MotionInversion ``loss/debiased_temporal_loss.py``, methods.md §4.5)::

    MSE(ε̂, ε) + MSE(α·ε̂ − β·ε̂[r], α·ε − β·ε[r]),   β = 1, α = √(β² + 1) = √2

where ``[r]`` is frame r of the same video broadcast over all frames, one random r per call shared by every
video in the batch (as the reference). Subtracting a frame removes the appearance shared by all frames, so the
second term rewards the embeddings for the frame-to-frame change (motion) rather than the look of the clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import Pix2GifInputError

DEBIAS_BETA = 1.0
DEBIAS_ALPHA = math.sqrt(DEBIAS_BETA**2 + 1.0)


def _check_pair(eps_pred: Tensor, eps: Tensor) -> None:
    if tuple(eps_pred.shape) != tuple(eps.shape):
        raise Pix2GifInputError(
            f"predicted noise has shape {tuple(eps_pred.shape)} but the target noise has {tuple(eps.shape)}; "
            "both must be the same latent batch."
        )


def plain_loss(eps_pred: Tensor, eps: Tensor) -> Tensor:
    """Mean squared error between predicted and true noise, any (equal) shapes; float32 scalar."""
    _check_pair(eps_pred, eps)
    return F.mse_loss(eps_pred.float(), eps.float())


def debiased_loss(
    eps_pred: Tensor,
    eps: Tensor,
    video_length: int | None = None,
    alpha: float = DEBIAS_ALPHA,
    beta: float = DEBIAS_BETA,
    generator: torch.Generator | None = None,
    reference_frame: int | None = None,
) -> Tensor:
    """Appearance-debiased loss on (B·F, C, h, w) latents; float32 scalar.

    ``video_length``: frames per video F (default: the whole leading dimension is one video).
    ``reference_frame``: the frame r to subtract; drawn uniformly from [0, F) with ``generator`` when None, on
    the latents' device (``generator`` must live there) and used as a tensor index, so it never waits for it.
    """
    _check_pair(eps_pred, eps)
    if eps_pred.dim() != 4:
        raise Pix2GifInputError(
            f"debiased loss expects video latents (frames, channels, height, width); got shape {tuple(eps_pred.shape)}."
        )
    rows = eps_pred.shape[0]
    frames = rows if video_length is None else video_length
    if frames < 1 or rows % frames:
        raise Pix2GifInputError(
            f"video_length {video_length} does not divide the {rows} latent frames; pass the frame count of one video."
        )
    if reference_frame is None:
        reference = torch.randint(0, frames, (1,), generator=generator, device=eps_pred.device)
    elif not 0 <= reference_frame < frames:
        raise Pix2GifInputError(f"reference_frame {reference_frame} is outside the video's {frames} frames.")
    else:
        reference = torch.tensor([reference_frame], device=eps_pred.device)

    def debias(x: Tensor) -> Tensor:
        videos = x.float().reshape(rows // frames, frames, *x.shape[1:])
        return alpha * videos - beta * videos.index_select(1, reference)

    return plain_loss(eps_pred, eps) + F.mse_loss(debias(eps_pred), debias(eps))
