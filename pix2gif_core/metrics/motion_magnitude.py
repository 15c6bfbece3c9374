"""Motion magnitude of a clip, Pix2Gif's metric (methods.md §2.2), in torch so it runs wherever the frames are.

Shi–Tomasi corners on the gray reference frame (maxCorners 100, quality 0.1, minDistance 7, blockSize 7) →
pyramidal Lucas–Kanade (15×15 window, maxLevel 2, ≤ 10 iterations, stop when a step is < 0.03 px) from the
reference to every frame → per frame, the mean norm of the point displacements that exceed 1 pixel (0 when none).
Units: pixels at the input resolution.

Differences from the OpenCV routine of the official metric: gray values are not quantised to uint8; gradients are
Sobel, not Scharr; and points that are lost (ill-conditioned window, a final position outside the image or
non-finite) are dropped, whereas the official code averages every returned point whatever its status.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import box_blur, spatial_gradient
from kornia.geometry.transform import build_pyramid

from ..errors import Pix2GifInputError

MAX_CORNERS = 100
QUALITY_LEVEL = 0.1
MIN_DISTANCE = 7.0
BLOCK_SIZE = 7
WINDOW = 15
MAX_LEVEL = 2
ITERATIONS = 10
STEP_EPSILON = 0.03
MIN_DISPLACEMENT = 1.0
MIN_EIGEN = 1.6e-6
"""Smallest eigenvalue of the window's mean structure tensor (gray in [0, 1], gradient per pixel) for a point to
count as trackable; equals OpenCV's default ``minEigThreshold`` 1e-4 on 8-bit images with Scharr gradients."""
MIN_SIDE = 32


@dataclass(frozen=True)
class MotionMagnitude:
    """``per_frame``: (F,) pixels, frame k against frame 0 (0 for frame 0); ``clip``: mean over frames 1..F-1
    (0 for a single frame); ``corners``: points detected on frame 0."""

    per_frame: torch.Tensor
    clip: float
    corners: int


@dataclass(frozen=True)
class PointTracks:
    """``points``: (N, 2) corner positions (x, y) on the reference; ``displacement``: (F, N, 2) pixels from the
    reference to each frame; ``valid``: (F, N) False for lost points."""

    points: torch.Tensor
    displacement: torch.Tensor
    valid: torch.Tensor


def measure_motion(frames: torch.Tensor, chunk: int | None = None) -> MotionMagnitude:
    """Motion of every frame against frame 0 for ``frames`` (F, H, W, 3) or (F, 3, H, W) RGB in [0, 1].

    ``chunk``: frames tracked at once (all by default); the result does not depend on it, the working memory
    (about 24 bytes per pixel per frame) does. To reproduce Pix2Gif's metric for generated frames, put the
    source image first.
    """
    count = frames.shape[0] if frames.dim() == 4 else 0
    reference = to_gray(frames[:1])
    points = detect_corners(reference[0])
    step = chunk or max(count, 1)
    parts = [track_points(reference, to_gray(frames[first:first + step]), points) for first in range(0, count, step)]
    displacement = torch.cat([part.displacement for part in parts])
    valid = torch.cat([part.valid for part in parts])
    norms = displacement.norm(dim=-1)
    counted = valid & (norms > MIN_DISPLACEMENT)
    per_frame = (norms * counted).sum(dim=1) / counted.sum(dim=1).clamp(min=1)
    per_frame[0] = 0.0
    clip = float(per_frame[1:].mean()) if per_frame.shape[0] > 1 else 0.0
    return MotionMagnitude(per_frame=per_frame, clip=clip, corners=points.shape[0])


def to_gray(frames: torch.Tensor) -> torch.Tensor:
    """(F, H, W, 3) or (F, 3, H, W) RGB in [0, 1] → (F, 1, H, W) luma (0.299 R + 0.587 G + 0.114 B)."""
    if frames.dim() != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
        raise Pix2GifInputError(
            f"frames to measure: expected (F, H, W, 3) or (F, 3, H, W) RGB, got {tuple(frames.shape)}."
        )
    rgb = frames.permute(0, 3, 1, 2) if frames.shape[-1] == 3 else frames
    if min(rgb.shape[-2:]) < MIN_SIDE:
        raise Pix2GifInputError(f"frames to measure: need at least {MIN_SIDE}×{MIN_SIDE} pixels, got {tuple(rgb.shape[-2:])}.")
    rgb = rgb.float()
    low, high = float(rgb.min()), float(rgb.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise Pix2GifInputError(
            f"frames to measure: values must lie in [0, 1], got [{low:g}, {high:g}]; convert from 0–255 or [-1, 1] first."
        )
    return rgb_to_grayscale(rgb)


def detect_corners(gray: torch.Tensor) -> torch.Tensor:
    """Shi–Tomasi corners of ``gray`` (1, H, W) → (N ≤ 100, 2) positions (x, y), strongest first.

    Minimum eigenvalue of the 7×7 box-summed structure tensor; keep 3×3 local maxima ≥ 0.1 × the global maximum
    (not on the 1-pixel border), then greedily drop corners closer than 7 pixels to a stronger kept one.
    """
    gradient = spatial_gradient(gray[None], mode="sobel", normalized=True)[:, 0]
    gx, gy = gradient[:, 0], gradient[:, 1]
    tensor = box_blur(torch.stack([gx * gx, gx * gy, gy * gy], dim=1), (BLOCK_SIZE, BLOCK_SIZE))[0]
    response = _min_eigenvalue(tensor[0], tensor[1], tensor[2])
    peak = float(response.max())
    if peak <= 0.0:
        return response.new_zeros(0, 2)
    is_max = (response == F.max_pool2d(response[None, None], 3, stride=1, padding=1)[0, 0]) & (response >= QUALITY_LEVEL * peak)
    is_max[[0, -1], :] = False
    is_max[:, [0, -1]] = False
    ys, xs = torch.nonzero(is_max, as_tuple=True)
    order = torch.argsort(response[ys, xs], descending=True, stable=True)
    candidates = torch.stack([xs[order], ys[order]], dim=1).to(response.dtype)
    return candidates[_spaced(candidates.cpu().tolist())].to(gray.device)


def track_points(reference: torch.Tensor, frames: torch.Tensor, points: torch.Tensor) -> PointTracks:
    """Pyramidal Lucas–Kanade of ``points`` (N, 2) from ``reference`` (1, 1, H, W) to ``frames`` (F, 1, H, W).

    Levels are kornia pyrdowns (pixel centre x at level L sits at (x + 0.5) / 2^L - 0.5); at each level, from
    the coarsest, Newton steps solve Σ (I(p) - J(p + d)) ∇I = G · step over the 15×15 window.
    """
    height, width = frames.shape[-2:]
    count = points.shape[0]
    half = WINDOW // 2
    steps = torch.arange(-half, half + 1, device=frames.device, dtype=frames.dtype)
    offsets = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), dim=-1).reshape(-1, 2)
    reference_levels = build_pyramid(reference, MAX_LEVEL + 1)
    frame_levels = build_pyramid(frames, MAX_LEVEL + 1)
    guess = frames.new_zeros(frames.shape[0], count, 2)
    for level in range(MAX_LEVEL, -1, -1):
        scale = 2.0 ** level
        window = ((points + 0.5) / scale - 0.5)[:, None, :] + offsets
        image = reference_levels[level]
        gradient = spatial_gradient(image, mode="sobel", normalized=True)[:, 0]
        values = _sample(torch.cat([image, gradient], dim=1), window[None])[0]
        patch, gx, gy = values[0], values[1], values[2]
        a, b, c = (gx * gx).sum(-1), (gx * gy).sum(-1), (gy * gy).sum(-1)
        trackable = _min_eigenvalue(a, b, c) / offsets.shape[0] >= MIN_EIGEN
        det = torch.where(trackable, a * c - b * b, torch.ones_like(a))
        refinement = torch.zeros_like(guess)
        moving = trackable.expand_as(guess[..., 0]).clone()
        for _ in range(ITERATIONS):
            target = _sample(frame_levels[level], window[None] + (guess + refinement)[:, :, None, :])[:, 0]
            error = patch - target
            bx, by = (error * gx).sum(-1), (error * gy).sum(-1)
            step = torch.stack([(c * bx - b * by) / det, (a * by - b * bx) / det], dim=-1)
            refinement = refinement + step * moving[..., None]
            moving = moving & (step.norm(dim=-1) >= STEP_EPSILON)
            if not bool(moving.any()):
                break
        guess = guess + refinement
        if level > 0:
            guess = 2.0 * guess
    final = points + guess
    inside = (final[..., 0] >= 0) & (final[..., 0] <= width - 1) & (final[..., 1] >= 0) & (final[..., 1] <= height - 1)
    valid = trackable & inside & torch.isfinite(guess).all(dim=-1)
    return PointTracks(points=points, displacement=guess, valid=valid)


def _min_eigenvalue(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Smaller eigenvalue of the symmetric 2×2 matrices [[a, b], [b, c]]."""
    return 0.5 * (a + c) - torch.sqrt(0.25 * (a - c) ** 2 + b * b)


def _sample(image: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``image`` (B, C, H, W) at pixel positions (B, N, K, 2) → (B, C, N, K); border clamp."""
    height, width = image.shape[-2:]
    size = positions.new_tensor([width - 1, height - 1])
    return F.grid_sample(image, 2.0 * positions / size - 1.0, mode="bilinear", padding_mode="border", align_corners=True)


def _spaced(candidates: list[list[float]]) -> list[int]:
    """Indices of the greedy subset (strongest first) with pairwise distance ≥ MIN_DISTANCE, at most MAX_CORNERS.

    Kept points are binned in MIN_DISTANCE-sized cells, so each test looks at the 3×3 neighbouring cells only.
    """
    cells: dict[tuple[int, int], list[tuple[float, float]]] = {}
    kept: list[int] = []
    limit = MIN_DISTANCE * MIN_DISTANCE
    for index, (x, y) in enumerate(candidates):
        cx, cy = int(x // MIN_DISTANCE), int(y // MIN_DISTANCE)
        neighbours = (p for dx in (-1, 0, 1) for dy in (-1, 0, 1) for p in cells.get((cx + dx, cy + dy), ()))
        if any((x - px) ** 2 + (y - py) ** 2 < limit for px, py in neighbours):
            continue
        cells.setdefault((cx, cy), []).append((x, y))
        kept.append(index)
        if len(kept) == MAX_CORNERS:
            break
    return kept
