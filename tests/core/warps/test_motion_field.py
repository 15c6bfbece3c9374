"""Parametric motion field and warp against closed-form float64 geometry."""
from __future__ import annotations

import math

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.warps.motion_field import (
    crop_to_valid, motion_field, reference_radius, warp_frames, warp_in_chunks,
)

H, W = 24, 32


def _pixels() -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    return xs, ys


def _linear_image(channels: int = 3) -> torch.Tensor:
    """I_c(x, y) = a_c x + b_c y + c_c: bilinear sampling reproduces it exactly between pixel centres."""
    xs, ys = _pixels()
    coefficients = torch.tensor([[0.7, -0.3, 1.0], [-0.2, 0.5, 2.0], [0.1, 0.1, -1.0], [0.4, 0.9, 0.0]])[:channels]
    return torch.stack([a * xs + b * ys + c for a, b, c in coefficients.double().tolist()])[None]


def _expected_source(kind: str, magnitude: float, t: float, direction: float = 0.0,
                     centre: tuple[float, float] = (0.5, 0.5)) -> tuple[torch.Tensor, torch.Tensor]:
    """Where frame-pixel p reads the source, from the motion definitions written out by hand."""
    xs, ys = _pixels()
    cx, cy = centre[0] * W - 0.5, centre[1] * H - 0.5
    radius = min(H, W) / 2
    if kind == "translate":
        return xs - t * magnitude * math.cos(math.radians(direction)), ys + t * magnitude * math.sin(math.radians(direction))
    if kind == "zoom":
        s = 1 + t * magnitude / radius
        return cx + (xs - cx) / s, cy + (ys - cy) / s
    angle = t * magnitude / radius  # clockwise on screen: (1, 0) → (cos, sin) with y pointing down
    dx, dy = xs - cx, ys - cy
    return cx + math.cos(angle) * dx + math.sin(angle) * dy, cy - math.sin(angle) * dx + math.cos(angle) * dy


@pytest.mark.parametrize("kind, magnitude, direction, centre", [
    ("translate", 3.0, 0.0, (0.5, 0.5)), ("translate", 2.5, 90.0, (0.5, 0.5)), ("translate", 4.0, 225.0, (0.5, 0.5)),
    ("zoom", 4.0, 0.0, (0.5, 0.5)), ("zoom", -3.0, 0.0, (0.25, 0.75)),
    ("rotate", 5.0, 0.0, (0.5, 0.5)), ("rotate", -2.0, 0.0, (0.1, 0.9)),
])
def test_displacement_matches_the_definition(kind: str, magnitude: float, direction: float, centre) -> None:
    frames = 4
    field = motion_field(kind, magnitude, frames, H, W, direction_deg=direction, center=centre, dtype=torch.float64)
    xs, ys = _pixels()
    for f in range(frames):
        sx, sy = _expected_source(kind, magnitude, f / (frames - 1), direction, centre)
        torch.testing.assert_close(field.displacement[f, ..., 0], xs - sx, rtol=0, atol=1e-9)
        torch.testing.assert_close(field.displacement[f, ..., 1], ys - sy, rtol=0, atol=1e-9)
    assert not field.displacement[0].any()


def test_magnitude_is_the_motion_at_the_reference_radius() -> None:
    """Content that starts at distance r from the centre moves m·r/R (zoom) or along an arc m·r/R (rotate)."""
    radius = reference_radius(H, W)
    assert radius == 12.0
    xs, ys = _pixels()
    cx, cy = (W - 1) / 2, (H - 1) / 2
    for kind in ("zoom", "rotate"):
        d = motion_field(kind, 3.0, 2, H, W, dtype=torch.float64).displacement[1]
        start = torch.hypot(xs - d[..., 0] - cx, ys - d[..., 1] - cy)  # distance of the source point
        travelled = d.norm(dim=-1)
        expected = 3.0 * start / radius if kind == "zoom" else 2 * start * math.sin(3.0 / radius / 2)  # chord of the arc
        torch.testing.assert_close(travelled, expected, rtol=0, atol=1e-9)


def test_sway_oscillates_and_loops() -> None:
    frames, cycles = 9, 1.0
    field = motion_field("sway", 5.0, frames, H, W, direction_deg=0.0, sway_cycles=cycles, dtype=torch.float64)
    for f in range(frames):
        expected = 5.0 * math.sin(2 * math.pi * cycles * f / (frames - 1))
        torch.testing.assert_close(field.displacement[f, ..., 0], torch.full((H, W), expected, dtype=torch.float64),
                                   rtol=0, atol=1e-12)
        assert field.displacement[f, ..., 1].abs().max() < 1e-12
    assert not field.displacement[0].any() and field.displacement[-1].abs().max() < 1e-12


def test_integer_translation_moves_the_pattern_by_k() -> None:
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    out = warp_frames(image, motion_field("translate", 6.0, 4, H, W))  # 0, 2, 4, 6 px to the right
    assert torch.equal(out[0], image[0])
    for f, k in enumerate((0, 2, 4, 6)):
        torch.testing.assert_close(out[f, :, :, k:], image[0, :, :, :W - k], rtol=0, atol=1e-5)
    up = warp_frames(image, motion_field("translate", 3.0, 2, H, W, direction_deg=90.0))
    torch.testing.assert_close(up[1, :, :H - 3], image[0, :, 3:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["translate", "zoom", "rotate"])
def test_warp_samples_the_source_where_the_field_says(kind: str) -> None:
    image = _linear_image(channels=4).float()  # a 4-channel "latent"
    field = motion_field(kind, 2.5, 3, H, W, direction_deg=30.0)
    out = warp_frames(image, field)
    assert out.shape == (3, 4, H, W)
    sx, sy = _expected_source(kind, 2.5, 1.0, 30.0)
    inside = (sx >= 0) & (sx <= W - 1) & (sy >= 0) & (sy <= H - 1)
    coefficients = [(0.7, -0.3, 1.0), (-0.2, 0.5, 2.0), (0.1, 0.1, -1.0), (0.4, 0.9, 0.0)]
    for channel, (a, b, c) in enumerate(coefficients):
        expected = a * sx + b * sy + c
        torch.testing.assert_close(out[2, channel][inside], expected[inside].float(), rtol=0, atol=2e-4)


def test_zero_magnitude_is_the_exact_identity() -> None:
    image = torch.rand(1, 3, H, W)
    for kind in ("translate", "zoom", "rotate", "sway"):
        field = motion_field(kind, 0.0, 5, H, W)
        assert not field.moving_frames().any()
        out = warp_frames(image, field, edge="crop")
        assert out.shape == (5, 3, H, W) and torch.equal(out, image.expand(5, -1, -1, -1))


def test_grid_is_the_align_corners_false_normalisation() -> None:
    field = motion_field("rotate", 4.0, 2, H, W, dtype=torch.float64)
    sx, sy = _expected_source("rotate", 4.0, 1.0)
    torch.testing.assert_close(field.grid[1, ..., 0], (2 * sx + 1) / W - 1, rtol=0, atol=1e-12)
    torch.testing.assert_close(field.grid[1, ..., 1], (2 * sy + 1) / H - 1, rtol=0, atol=1e-12)


def test_hard_mask_keeps_outside_pixels_exactly() -> None:
    image = torch.rand(1, 3, H, W)
    mask = torch.zeros(1, H, W)
    mask[:, :, : W // 2] = 1.0
    field = motion_field("rotate", 6.0, 3, H, W, mask=mask)
    out = warp_frames(image, field)
    assert torch.equal(out[:, :, :, W // 2:], image[:, :, :, W // 2:].expand(3, -1, -1, -1))
    assert not torch.equal(out[2, :, :, : W // 2], image[0, :, :, : W // 2])
    full = motion_field("rotate", 6.0, 3, H, W)
    half = motion_field("rotate", 6.0, 3, H, W, mask=torch.full((H, W), 0.5))
    torch.testing.assert_close(half.displacement, 0.5 * full.displacement, rtol=0, atol=1e-7)


def test_reflect_and_crop_leave_no_black_border() -> None:
    ones = torch.ones(1, 3, H, W)
    for edge in ("reflect", "crop"):
        for kind in ("translate", "zoom", "rotate"):
            out = warp_frames(ones, motion_field(kind, -5.0 if kind == "zoom" else 5.0, 3, H, W), edge=edge)
            torch.testing.assert_close(out, torch.ones_like(out), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind, magnitude", [("translate", 4.0), ("rotate", 6.0), ("zoom", -4.0), ("sway", 3.0)])
def test_crop_keeps_every_sample_inside(kind: str, magnitude: float) -> None:
    cropped = crop_to_valid(motion_field(kind, magnitude, 4, H, W, direction_deg=20.0))
    xs, ys = _pixels()
    sx = xs.float() - cropped.displacement[..., 0]
    sy = ys.float() - cropped.displacement[..., 1]
    assert sx.min() >= -1e-3 and sx.max() <= W - 1 + 1e-3
    assert sy.min() >= -1e-3 and sy.max() <= H - 1 + 1e-3


def test_crop_of_a_translation_is_tight() -> None:
    cropped = crop_to_valid(motion_field("translate", 4.0, 2, H, W))
    sx = torch.arange(W, dtype=torch.float32) - cropped.displacement[1, H // 2, :, 0]
    assert 0.0 <= float(sx[0]) < 0.1  # the left-most column reads the first source column: nothing wasted
    assert float(sx[-1]) <= W - 1


def test_crop_refuses_huge_motion() -> None:
    with pytest.raises(Pix2GifInputError, match="edge mode 'crop'"):
        warp_frames(torch.rand(1, 3, H, W), motion_field("translate", 0.45 * W, 2, H, W), edge="crop")


def test_warp_is_differentiable_and_frame_batched() -> None:
    image = torch.rand(3, 3, H, W, requires_grad=True)
    out = warp_frames(image, motion_field("zoom", 2.0, 3, H, W))
    out.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@pytest.mark.parametrize("call, fragment", [
    (lambda: motion_field("spin", 1.0, 2, H, W), "motion type"),
    (lambda: motion_field("zoom", -12.0, 2, H, W), "zoom magnitude"),
    (lambda: motion_field("translate", float("nan"), 2, H, W), "motion magnitude"),
    (lambda: motion_field("translate", 1.0, 1, H, W), "frame count"),
    (lambda: motion_field("rotate", 1.0, 2, H, W, center=(1.5, 0.5)), "motion centre"),
    (lambda: motion_field("translate", 1.0, 2, H, W, mask=torch.ones(1, H, W + 1)), "resize the mask"),
    (lambda: motion_field("translate", 1.0, 2, H, W, mask=torch.full((H, W), 2.0)), "values must lie in"),
    (lambda: warp_frames(torch.rand(2, 3, H, W), motion_field("translate", 1.0, 3, H, W)), "image to warp"),
    (lambda: warp_frames(torch.rand(1, 3, H, W), motion_field("translate", 1.0, 3, H, W), edge="wrap"), "edge mode"),
])
def test_bad_input_is_named(call, fragment: str) -> None:
    with pytest.raises(Pix2GifInputError, match=fragment):
        call()


@pytest.mark.parametrize("edge", ["reflect", "crop"])
def test_half_precision_images_warp_like_float32(edge: str) -> None:
    """ComfyUI's --fp16-intermediates hands float16 images: finite frames in float16, within fp16 rounding."""
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(5))
    field = motion_field("rotate", 6.0, 4, H, W)
    half = warp_frames(image.half(), field, edge)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), warp_frames(image, field, edge), rtol=0, atol=2e-3)


@pytest.mark.parametrize("edge", ["reflect", "crop"])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_warping_in_chunks_equals_one_call(edge: str, chunk: int) -> None:
    frames = 7
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    mask = (torch.arange(W) < W // 2).float().expand(frames, H, W)

    def field_of(first, stop):
        return motion_field("rotate", 9.0, frames, H, W, mask=mask, frame_range=(first, stop))

    whole = warp_frames(image, motion_field("rotate", 9.0, frames, H, W, mask=mask), edge)
    parts = torch.cat([warped for _, _, warped in warp_in_chunks(image, field_of, frames, edge, chunk)])
    assert torch.equal(parts, whole)
