"""Parametric, weight-free motion fields (translate / zoom / rotate / sway) and the warp that applies them.

Coordinates: pixel (row i, column j) has its centre at (x=j, y=i); the image covers [-0.5, W-0.5] × [-0.5, H-0.5];
x points right, y points down. ``grid_sample`` coordinates follow ``align_corners=False``: u = (2x + 1) / W - 1.

A field is *backward*: frame f at pixel p shows the source at p - d_f(p), so ``d`` is the distance the content
travelled to arrive at p. For a translation d is constant and the pattern moves by exactly |d| pixels.

Magnitude (pixels) at the last frame, with R = min(H, W) / 2 the *reference radius*:
- translate: every point moves ``magnitude`` pixels towards ``direction_deg`` (0° = right, 90° = up, 180° = left).
- zoom: points at distance R from the centre move ``magnitude`` pixels radially (scale 1 + magnitude / R);
  positive = zoom in (content grows), negative = zoom out (needs magnitude > -R).
- rotate: points at distance R travel an arc of ``magnitude`` pixels (angle magnitude / R radians) about the centre;
  positive = clockwise on screen, negative = counter-clockwise.
- sway: a translation along ``direction_deg`` (default horizontal) of ``magnitude · sin(2π · cycles · t)``,
  so the clip starts and, for whole cycles, ends at the input (a seamless loop).
Frame f of F uses t = f / (F - 1): frame 0 is the input exactly, frame F-1 carries the full motion.
The measured Lucas–Kanade magnitude (``motion_magnitude``) therefore grows linearly with ``magnitude``.
For a latent (1/8 of the image size) pass the latent height/width and ``magnitude / 8``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.transform import get_affine_matrix2d

from ..errors import Pix2GifInputError

MotionKind = Literal["translate", "zoom", "rotate", "sway"]
EdgeMode = Literal["reflect", "crop"]
MOTION_KINDS: tuple[str, ...] = ("translate", "zoom", "rotate", "sway")
EDGE_MODES: tuple[str, ...] = ("reflect", "crop")
MIN_CROP_KEEP = 0.25
"""``edge="crop"`` refuses motions that would keep less than this fraction of the image width."""


@dataclass(frozen=True)
class MotionField:
    """A backward displacement field: frame f at pixel p shows the source at p - ``displacement[f, y, x]``.

    ``displacement``: (F, H, W, 2) in pixels, last axis (dx, dy). ``still``: optional (1|F, H, W) bool, pixels
    that :func:`warp_frames` copies bit for bit from the input (where a mask is 0).
    """

    displacement: torch.Tensor
    still: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return self.displacement.shape[0]

    @property
    def height(self) -> int:
        return self.displacement.shape[1]

    @property
    def width(self) -> int:
        return self.displacement.shape[2]

    @cached_property
    def grid(self) -> torch.Tensor:
        """(F, H, W, 2) ``grid_sample`` coordinates (x, y) for ``align_corners=False``; computed once, read-only."""
        return sampling_grid(self.displacement)

    def moving_frames(self) -> torch.Tensor:
        """(F,) bool: frames with any non-zero displacement (the others are the input, exactly)."""
        return self.displacement.flatten(1).any(dim=1)


def sampling_grid(displacement: torch.Tensor) -> torch.Tensor:
    """(F, H, W, 2) backward displacement in pixels → ``grid_sample`` grid (``align_corners=False``)."""
    height, width = displacement.shape[1:3]
    size = displacement.new_tensor([width, height])
    identity = (2.0 * _pixel_centres(height, width, displacement) + 1.0) / size - 1.0
    return torch.addcmul(identity, displacement, -2.0 / size)


def reference_radius(height: int, width: int) -> float:
    """R = min(H, W) / 2: the distance from the centre at which zoom/rotate magnitudes are measured (pixels)."""
    return min(height, width) / 2.0


def motion_field(
    kind: str,
    magnitude: float,
    frames: int,
    height: int,
    width: int,
    *,
    direction_deg: float = 0.0,
    center: tuple[float, float] = (0.5, 0.5),
    sway_cycles: float = 1.0,
    mask: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    frame_range: tuple[int, int] | None = None,
) -> MotionField:
    """Build the per-frame displacement of one parametric motion (see the module docstring for units).

    ``center``: (x, y) as fractions of width/height (0 = left/top edge, 1 = right/bottom edge); zoom and rotate
    only. ``mask``: (1|F, H, W) or (H, W) in [0, 1], multiplies the displacement, so pixels where it is 0 stay
    exactly unchanged by :func:`warp_frames` with ``edge="reflect"``. ``frame_range``: (first, stop) to build
    only those frames of the F-frame motion (for work in chunks). Returns a field of shape (F, H, W, 2), or
    (stop - first, H, W, 2).
    """
    _check_motion_args(kind, magnitude, frames, height, width, center)
    first, stop = frame_range or (0, frames)
    if mask is not None:
        mask = _checked_mask(mask, frames, height, width)
        mask = mask[first:stop] if mask.shape[0] == frames else mask
        device = mask.device if device is None else device
    if magnitude == 0.0:
        return MotionField(torch.zeros(stop - first, height, width, 2, device=device, dtype=dtype))
    affine = _forward_affine(kind, magnitude, frames, height, width, direction_deg, center, sway_cycles)
    inverse = torch.linalg.inv(affine[first:stop])
    frames = stop - first
    # source = A p + b  ⇒  d = p - source = (I - A) p - b; written as a row term (F, 1, W) + a column term (F, H, 1)
    linear = (torch.eye(2, dtype=torch.float64) - inverse[:, :2, :2]).to(device=device, dtype=dtype)
    offset = (-inverse[:, :2, 2]).to(device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype)[:, None]
    displacement = torch.empty(frames, height, width, 2, device=device, dtype=dtype)
    for axis in (0, 1):
        along_x = linear[:, axis, 0, None, None] * xs + offset[:, axis, None, None]
        torch.add(along_x, linear[:, axis, 1, None, None] * ys, out=displacement[..., axis])
    if mask is None:
        return MotionField(displacement)
    still = (mask == 0).to(displacement.device)
    return MotionField(displacement * mask.to(displacement)[..., None], still if bool(still.any()) else None)


def warp_frames(image: torch.Tensor, field: MotionField, edge: str = "reflect",
                crop_keep: float | None = None) -> torch.Tensor:
    """Warp ``image`` (1|F, C, H, W) by ``field`` → (F, C, H, W); any C (images, latents), differentiable.

    ``edge="reflect"``: samples outside the image are mirrored (no black borders); frames with an all-zero
    displacement (frame 0) and ``field.still`` pixels are copied bit for bit. ``edge="crop"``: every frame is
    zoomed about the image centre by the one factor that keeps all samples of all frames inside the image (see
    :func:`crop_to_valid`; ``crop_keep`` gives that factor when ``field`` is one chunk of a longer clip); no
    black borders, but every pixel is resampled. An all-zero field returns a copy of the input. Sampling is
    computed in at least float32; the result has ``image``'s dtype.
    """
    if edge not in EDGE_MODES:
        raise Pix2GifInputError(f"edge mode: got {edge!r}; choose one of {', '.join(EDGE_MODES)}.")
    if image.dim() != 4 or image.shape[0] not in (1, field.frames) or image.shape[-2:] != (field.height, field.width):
        raise Pix2GifInputError(
            f"image to warp: expected (1 or {field.frames}, C, {field.height}, {field.width}), got {tuple(image.shape)};"
            " build the motion field at the image's size and frame count."
        )
    frames = image.expand(field.frames, -1, -1, -1)
    if edge == "crop":
        field = crop_to_valid(field) if crop_keep is None else zoom_in(field, crop_keep)
    moving = field.moving_frames()
    if not bool(moving.any()):
        return frames.clone()
    work = torch.promote_types(image.dtype, torch.float32)  # half-precision grid_sample is unreliable on CPUs
    grid = field.grid.to(device=image.device, dtype=work)
    warped = F.grid_sample(frames.to(work), grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False).to(image.dtype)
    if edge == "reflect":
        static = (~moving).nonzero()[:, 0].to(image.device)
        warped[static] = frames[static]  # grid_sample's backward does not read its output
    if field.still is None:
        return warped
    return torch.where(field.still[:, None].to(image.device), frames, warped)


def crop_to_valid(field: MotionField) -> MotionField:
    """Compose ``field`` with one centred zoom-in, the same for all frames, so no sample leaves the image.

    A sample is *outside* when its source position leaves the pixel-centre range [0, W-1] × [0, H-1] (bilinear
    would mix in padding). The margin b (pixels along the width; b·H/W along the height) is the smallest that
    excludes every such output pixel of every frame together with its bilinear neighbour; the kept rectangle is
    scaled back to H × W. Exact for affine fields; masked fields are bilinearly interpolated. The result has no
    ``still`` pixels: every pixel is resampled.
    """
    return zoom_in(field, crop_keep_of(outside_pixels(field)))


def outside_pixels(field: MotionField) -> torch.Tensor:
    """(H, W) bool: output pixels whose source leaves the image in any frame of ``field`` (OR over chunks)."""
    source = _pixel_centres(field.height, field.width, field.displacement) - field.displacement
    return (
        (source[..., 0] < -1e-4) | (source[..., 0] > field.width - 1 + 1e-4)
        | (source[..., 1] < -1e-4) | (source[..., 1] > field.height - 1 + 1e-4)
    ).any(dim=0)


def crop_keep_of(outside: torch.Tensor) -> float:
    """The zoom factor (kept fraction of the width, ≤ 1) that excludes every ``outside`` (H, W) pixel."""
    height, width = outside.shape
    if not bool(outside.any()):
        return 1.0
    pixels = _pixel_centres(height, width, outside.float())
    x, y = pixels[..., 0][outside], pixels[..., 1][outside]
    needed = torch.stack([
        (x + 1) * width / (width - 1), (width - x) * width / (width - 1),
        (y + 1) * width / (height - 1), (height - y) * width / (height - 1),
    ]).amin(dim=0)
    keep = 1.0 - 2.0 * float(needed.max()) / width
    if keep < MIN_CROP_KEEP:
        raise Pix2GifInputError(
            f"edge mode 'crop': this motion pulls in so much from outside that only {max(keep, 0.0):.0%} of the"
            f" image would remain (minimum {MIN_CROP_KEEP:.0%}); lower the magnitude or use edge mode 'reflect'."
        )
    return keep


def zoom_in(field: MotionField, keep: float) -> MotionField:
    """``field`` composed with a centred zoom that keeps ``keep`` of the width (1 = ``field`` itself)."""
    if keep >= 1.0:
        return field
    height, width = field.height, field.width
    pixels = _pixel_centres(height, width, field.displacement)
    centre = pixels.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    zoomed = centre + (pixels - centre) * keep
    zoomed_grid = sampling_grid((pixels - zoomed)[None]).expand(field.frames, -1, -1, -1)
    moved = F.grid_sample(field.displacement.permute(0, 3, 1, 2), zoomed_grid, mode="bilinear",
                          padding_mode="border", align_corners=False).permute(0, 2, 3, 1)
    return MotionField(pixels - zoomed + moved)


def warp_in_chunks(image: torch.Tensor, field_of: Callable[[int, int], MotionField], frames: int, edge: str,
                   chunk: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """:func:`warp_frames` of an F-frame motion ``chunk`` frames at a time: yields (first, stop, warped frames).

    ``image`` (1|F, C, H, W); ``field_of(first, stop)`` builds those frames' field (``motion_field`` with
    ``frame_range``). Equal to one call on the whole clip, with at most ``chunk`` frames of field and grid in
    memory; ``edge="crop"`` first ORs the outside pixels of all chunks, so the zoom is the whole clip's.
    """
    ranges = [(first, min(first + chunk, frames)) for first in range(0, frames, chunk)]
    keep = None
    if edge == "crop":
        outside = functools.reduce(torch.logical_or, (outside_pixels(field_of(*span)) for span in ranges))
        keep = crop_keep_of(outside)
    for first, stop in ranges:
        part = image if image.shape[0] == 1 else image[first:stop]
        yield first, stop, warp_frames(part, field_of(first, stop), edge, crop_keep=keep)


def _pixel_centres(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(H, W, 2) pixel-centre coordinates (x, y) on ``like``'s device and dtype."""
    return create_meshgrid(height, width, normalized_coordinates=False, device=like.device, dtype=like.dtype)[0]


def _forward_affine(
    kind: str, magnitude: float, frames: int, height: int, width: int,
    direction_deg: float, center: tuple[float, float], sway_cycles: float,
) -> torch.Tensor:
    """(F, 3, 3) float64 maps from source pixel to frame pixel (content motion)."""
    t = torch.arange(frames, dtype=torch.float64) / (frames - 1)
    radius = reference_radius(height, width)
    pivot = torch.tensor([center[0] * width - 0.5, center[1] * height - 0.5], dtype=torch.float64).expand(frames, 2)
    shift = torch.zeros(frames, 2, dtype=torch.float64)
    scale = torch.ones(frames, 2, dtype=torch.float64)
    angle = torch.zeros(frames, dtype=torch.float64)
    if kind in ("translate", "sway"):
        progress = t if kind == "translate" else torch.sin(2.0 * math.pi * sway_cycles * t)
        heading = math.radians(direction_deg)
        shift = magnitude * progress[:, None] * torch.tensor([math.cos(heading), -math.sin(heading)], dtype=torch.float64)
    elif kind == "zoom":
        scale = (1.0 + t * magnitude / radius)[:, None].expand(frames, 2)
    else:
        angle = torch.rad2deg(t * magnitude / radius)
    return get_affine_matrix2d(shift, pivot, scale, angle)


def _check_motion_args(
    kind: str, magnitude: float, frames: int, height: int, width: int, center: tuple[float, float]
) -> None:
    if kind not in MOTION_KINDS:
        raise Pix2GifInputError(f"motion type: got {kind!r}; choose one of {', '.join(MOTION_KINDS)}.")
    if not math.isfinite(magnitude):
        raise Pix2GifInputError(f"motion magnitude: got {magnitude}; use a finite number of pixels.")
    if frames < 2:
        raise Pix2GifInputError(f"frame count: got {frames}; a motion needs at least 2 frames (frame 0 is the input).")
    if height < 2 or width < 2:
        raise Pix2GifInputError(f"image size: got {height}×{width}; both sides must be at least 2 pixels.")
    if not all(0.0 <= c <= 1.0 for c in center):
        raise Pix2GifInputError(
            f"motion centre: got {center}; give (x, y) as fractions of the width and height, each in [0, 1]."
        )
    radius = reference_radius(height, width)
    if kind == "zoom" and magnitude <= -radius:
        raise Pix2GifInputError(
            f"zoom magnitude: got {magnitude}; zooming out moves points at most {radius:g} pixels"
            f" (half the shorter side), so use a magnitude above -{radius:g}."
        )


def _checked_mask(mask: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Return the mask as (1|F, H, W) after checking shape and range."""
    mask = mask[None] if mask.dim() == 2 else mask
    if mask.dim() != 3 or mask.shape[0] not in (1, frames) or mask.shape[-2:] != (height, width):
        raise Pix2GifInputError(
            f"motion mask: expected (1 or {frames}, {height}, {width}), got {tuple(mask.shape)};"
            " resize the mask to the image size."
        )
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        raise Pix2GifInputError("motion mask: contains NaN or infinity; use values in [0, 1].")
    if bool((mask < 0).any()) or bool((mask > 1).any()):
        raise Pix2GifInputError(
            f"motion mask: values must lie in [0, 1], got [{float(mask.min()):g}, {float(mask.max()):g}]."
        )
    return mask
