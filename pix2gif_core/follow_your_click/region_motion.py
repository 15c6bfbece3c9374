"""Mean optical-flow magnitude inside and outside a region of a clip (Follow-Your-Click's motion strength is "the
flow magnitude of the moving region", methods.md §5.4; its exact computation was never released).

Points: the Shi–Tomasi corners of frame 0 plus a grid every :data:`GRID` pixels, tracked into every frame with
the pyramidal Lucas–Kanade of :mod:`pix2gif_core.metrics.motion_magnitude`; points in flat areas are untrackable
and dropped. A point belongs to the region when the mask at its frame-0 position is > 0.5. Each side's value is
the mean displacement norm over its tracked points and frames 1…F−1 (pixels, no minimum displacement, so a still
background gives 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import Pix2GifInputError
from ..metrics.motion_magnitude import detect_corners, to_gray, track_points

GRID = 8
INSIDE_THRESHOLD = 0.5


@dataclass(frozen=True)
class RegionMotion:
    """``inside``/``outside``: mean flow magnitude in pixels; ``points_inside``/``points_outside``: the points the
    means average (tracked into at least one frame)."""

    inside: float
    outside: float
    points_inside: int
    points_outside: int


def _mean(norms: torch.Tensor, counted: torch.Tensor) -> float:
    return float((norms * counted).sum() / counted.sum().clamp(min=1))


def region_motion(frames: torch.Tensor, mask: torch.Tensor, chunk: int | None = None) -> RegionMotion:
    """Flow magnitude inside/outside ``mask`` ``(H, W)`` for ``frames`` ``(F, H, W, 3)`` RGB in [0, 1], F ≥ 2."""
    if tuple(mask.shape) != tuple(frames.shape[1:3]):
        raise Pix2GifInputError(f"mask is {mask.shape[-1]}×{mask.shape[-2]} px but the frames are "
                                f"{frames.shape[2]}×{frames.shape[1]}; give a mask of the frames' size")
    reference = to_gray(frames[:1])
    height, width = frames.shape[1:3]
    ys, xs = torch.meshgrid(torch.arange(GRID // 2, height, GRID), torch.arange(GRID // 2, width, GRID),
                            indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1).to(reference)
    points = torch.cat([detect_corners(reference[0]), grid])
    step = chunk or frames.shape[0]
    parts = [track_points(reference, to_gray(frames[first:first + step]), points)
             for first in range(1, frames.shape[0], step)]
    norms = torch.cat([part.displacement for part in parts]).norm(dim=-1)
    valid = torch.cat([part.valid for part in parts])
    at = points.round().long()
    inside = (mask.to(points.device)[at[:, 1], at[:, 0]] > INSIDE_THRESHOLD)[None]
    tracked = valid.any(dim=0)
    return RegionMotion(_mean(norms, valid & inside), _mean(norms, valid & ~inside),
                        int((tracked & inside[0]).sum()), int((tracked & ~inside[0]).sum()))
