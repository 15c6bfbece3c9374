"""Motion magnitude (Shi–Tomasi + pyramidal Lucas–Kanade) on analytically moved synthetic textures."""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.warps.motion_field import motion_field, warp_frames
from pix2gif_core.metrics.motion_magnitude import detect_corners, measure_motion, to_gray

SIZE = 128
CENTRE = (SIZE - 1) / 2


def _blobs(seed: int = 0, count: int = 160) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=generator, dtype=torch.float64) * (SIZE + 40) - 20
    colours = torch.rand(count, 3, generator=generator, dtype=torch.float64)
    sigmas = 2.0 + 3.0 * torch.rand(count, generator=generator, dtype=torch.float64)
    return centres, colours, sigmas


def _texture(source_x: torch.Tensor, source_y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A continuous RGB texture (sum of Gaussian blobs) evaluated at source positions → (H, W, 3) in [0, 1]."""
    centres, colours, sigmas = _blobs(seed)
    d2 = (source_x[..., None] - centres[:, 0]) ** 2 + (source_y[..., None] - centres[:, 1]) ** 2
    weights = torch.exp(-d2 / (2 * sigmas ** 2))
    return (weights @ colours / 2.5).clamp(0, 1).float()


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float64), torch.arange(SIZE, dtype=torch.float64),
                            indexing="ij")
    return xs, ys


def _translated(dx: float, dy: float) -> torch.Tensor:
    xs, ys = _grid()
    return _texture(xs - dx, ys - dy)


def _rotated(degrees: float) -> torch.Tensor:
    """Content rotated clockwise on screen by ``degrees`` about the image centre."""
    xs, ys = _grid()
    a = math.radians(degrees)
    dx, dy = xs - CENTRE, ys - CENTRE
    return _texture(CENTRE + math.cos(a) * dx + math.sin(a) * dy, CENTRE - math.sin(a) * dx + math.cos(a) * dy)


def test_translation_is_recovered_within_ten_percent() -> None:
    shifts = [2.0, 4.0, 8.0, 12.0]
    frames = torch.stack([_translated(0, 0)] + [_translated(k, 0) for k in shifts])
    result = measure_motion(frames)
    assert result.corners > 30
    assert result.per_frame[0] == 0
    for measured, k in zip(result.per_frame[1:].tolist(), shifts):
        assert measured == pytest.approx(k, rel=0.1)
    assert result.clip == pytest.approx(sum(shifts) / 4, rel=0.1)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_measuring_in_chunks_gives_the_same_result(chunk: int) -> None:
    frames = torch.stack([_translated(0, 0)] + [_translated(k, k / 2) for k in (2.0, 5.0, 7.5, 9.0)])
    whole, parts = measure_motion(frames), measure_motion(frames, chunk=chunk)
    assert torch.equal(parts.per_frame, whole.per_frame) and parts.clip == whole.clip


def test_subpixel_diagonal_translation() -> None:
    frames = torch.stack([_translated(0, 0), _translated(3.5, -2.5)])
    assert float(measure_motion(frames).per_frame[1]) == pytest.approx(math.hypot(3.5, 2.5), rel=0.1)


def test_rotation_matches_the_analytic_displacement_of_the_tracked_points() -> None:
    degrees = 5.0
    frames = torch.stack([_rotated(0.0), _rotated(degrees)])
    corners = detect_corners(to_gray(frames)[0]).double()
    a = math.radians(degrees)
    rel = corners - CENTRE
    moved = torch.stack([math.cos(a) * rel[:, 0] - math.sin(a) * rel[:, 1],
                         math.sin(a) * rel[:, 0] + math.cos(a) * rel[:, 1]], dim=1) + CENTRE
    norms = (moved - corners).norm(dim=1)
    expected = float(norms[norms > 1].mean())
    assert float(measure_motion(frames).per_frame[1]) == pytest.approx(expected, rel=0.1)


def test_static_clip_measures_zero() -> None:
    frames = _translated(0, 0)[None].expand(4, -1, -1, -1)
    result = measure_motion(frames)
    assert torch.equal(result.per_frame, torch.zeros(4)) and result.clip == 0.0


def test_parametric_translation_is_measured_as_its_magnitude() -> None:
    image = _translated(0, 0).permute(2, 0, 1)[None]
    frames = warp_frames(image, motion_field("translate", 9.0, 4, SIZE, SIZE, direction_deg=135.0))
    result = measure_motion(frames)  # channel-first input
    for measured, expected in zip(result.per_frame[1:].tolist(), (3.0, 6.0, 9.0)):
        assert measured == pytest.approx(expected, rel=0.1)


def test_corners_of_a_square_and_spacing() -> None:
    image = torch.zeros(64, 64, 3)
    image[20:44, 16:40] = 1.0
    corners = detect_corners(to_gray(image[None])[0])
    assert corners.shape == (4, 2)
    expected = torch.tensor([[16.0, 20.0], [39.0, 20.0], [16.0, 43.0], [39.0, 43.0]])
    for point in expected:
        assert (corners - point).norm(dim=1).min() <= 3.0  # the 7×7 min-eigenvalue peak sits ~2 px inside
    busy = detect_corners(to_gray(_translated(0, 0)[None])[0])
    assert 30 < busy.shape[0] <= 100
    distances = torch.cdist(busy, busy) + torch.eye(busy.shape[0]) * 1e3
    assert distances.min() >= 7.0


@pytest.mark.parametrize("frames, fragment", [
    (torch.rand(2, 64, 64), "expected"), (torch.rand(2, 64, 64, 3) * 255, "values must lie in"),
    (torch.rand(2, 16, 16, 3), "at least 32"),
])
def test_bad_frames_are_named(frames: torch.Tensor, fragment: str) -> None:
    with pytest.raises(Pix2GifInputError, match=f"frames to measure: .*{fragment}"):
        measure_motion(frames)


def test_half_precision_frames_measure_like_float32() -> None:
    frames = torch.stack([_translated(0, 0)] + [_translated(k, 0) for k in (3.0, 6.0)])
    half, full = measure_motion(frames.half()), measure_motion(frames.half().float())
    assert torch.isfinite(half.per_frame).all()
    torch.testing.assert_close(half.per_frame, full.per_frame)
