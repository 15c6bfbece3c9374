"""GIF encoder: decoded with Pillow (an independent decoder) and checked against the inputs."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.video.gif_encoder import (
    as_uint8_frames,
    clip_palette,
    encode_gif,
    frame_durations_ms,
    map_to_palette,
    pingpong_order,
)


def smooth_clip(frames: int = 8, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """(frames, H, W, 3) float32 in [0, 1]: three octaves of bilinear value noise per channel, panned 3 px down
    and 2 px right per frame -- smooth, photo-like colours that move."""
    rng = np.random.default_rng(seed)
    big_h, big_w = height + 3 * frames, width + 2 * frames
    field = np.zeros((big_h, big_w, 3))
    for cells, amplitude in ((3, 0.5), (6, 0.25), (12, 0.12)):
        grid = rng.random((cells + 1, cells + 1, 3))
        yi, xi = np.linspace(0, cells, big_h), np.linspace(0, cells, big_w)
        y0, x0 = np.minimum(yi.astype(int), cells - 1), np.minimum(xi.astype(int), cells - 1)
        fy, fx = (yi - y0)[:, None, None], (xi - x0)[None, :, None]
        field += amplitude * (
            grid[y0][:, x0] * (1 - fy) * (1 - fx)
            + grid[y0 + 1][:, x0] * fy * (1 - fx)
            + grid[y0][:, x0 + 1] * (1 - fy) * fx
            + grid[y0 + 1][:, x0 + 1] * fy * fx
        )
    field = (field - field.min()) / (field.max() - field.min())
    return np.stack([field[3 * t : 3 * t + height, 2 * t : 2 * t + width] for t in range(frames)]).astype(np.float32)


def to_levels(clip: np.ndarray) -> np.ndarray:
    """Reference float -> 8-bit conversion, in float64: round half up, clip to 0..255."""
    return np.clip(np.floor(clip.astype(np.float64) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def decode(data: bytes) -> tuple[Image.Image, list[np.ndarray], list[int]]:
    image = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for frame in ImageSequence.Iterator(image):
        frames.append(np.asarray(frame.convert("RGB")))
        durations.append(frame.info["duration"])
    return image, frames, durations


def gif_bytes(frames, **kwargs) -> bytes:
    buffer = io.BytesIO()
    encode_gif(frames, buffer, **kwargs)
    return buffer.getvalue()


def psnr(decoded: list[np.ndarray], reference: np.ndarray) -> float:
    """Mean per-frame PSNR in dB, float64."""
    values = []
    for a, b in zip(decoded, reference):
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        values.append(10.0 * math.log10(255.0**2 / mse))
    return float(np.mean(values))


# ---------------------------------------------------------------------------------------------------------------
# Order, timing, input conversion


def test_pingpong_order_plays_back_without_repeating_the_ends() -> None:
    assert pingpong_order(6) == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    assert pingpong_order(2) == [0, 1]
    assert pingpong_order(1) == [0]


@pytest.mark.parametrize("fps", [8.0, 7.0, 12.0, 24.0, 23.976, 3.3])
def test_gif_durations_round_to_10ms_without_drift(fps: float) -> None:
    count = 50
    durations = frame_durations_ms(count, fps, tick_ms=10, min_ms=20)
    exact = 1000.0 / fps
    assert len(durations) == count
    assert all(d % 10 == 0 for d in durations)
    assert all(abs(d - exact) < 10.0 for d in durations)
    for k in range(1, count + 1):  # the running total never drifts by more than half a tick
        assert abs(sum(durations[:k]) - k * exact) <= 5.0 + 1e-9


def test_gif_durations_never_below_20ms() -> None:
    assert frame_durations_ms(10, 100.0, tick_ms=10, min_ms=20) == [20] * 10


def test_float_frames_round_to_nearest_level() -> None:
    rng = np.random.default_rng(1)
    clip = rng.uniform(-0.2, 1.2, (2, 5, 7, 3)).astype(np.float32)
    ours = as_uint8_frames(torch.from_numpy(clip))
    reference = to_levels(clip)
    assert ours.dtype == np.uint8 and ours.shape == clip.shape
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1  # float32 vs float64 at exact .5 ties
    assert np.mean(ours == reference) > 0.999


# ---------------------------------------------------------------------------------------------------------------
# Palette and mapping


def test_mapping_is_within_sqrt3_of_the_exact_nearest_colour() -> None:
    rng = np.random.default_rng(2)
    palette = np.unique(rng.integers(0, 256, (200, 3)).astype(np.uint8), axis=0)
    frames = rng.integers(0, 256, (3, 20, 30, 3)).astype(np.uint8)
    indices = map_to_palette(frames, palette)
    pixels = frames.reshape(-1, 3).astype(np.float64)
    colours = palette.astype(np.float64)
    exact = np.sqrt(np.min(np.sum((pixels[:, None, :] - colours[None]) ** 2, axis=-1), axis=1))
    ours = np.linalg.norm(pixels - colours[indices.reshape(-1)], axis=1)
    assert indices.shape == frames.shape[:3]
    assert np.all(ours <= exact + math.sqrt(3.0) + 1e-9)
    assert np.mean(ours <= exact + 1e-9) > 0.95  # and almost always the exact nearest colour


def test_few_colour_clip_is_lossless() -> None:
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 64, (40, 3)).astype(np.uint8) * 4
    clip = colours[rng.integers(0, 40, (5, 30, 20))]
    _, decoded, _ = decode(gif_bytes(clip, fps=10))
    assert len(decoded) == 5
    np.testing.assert_array_equal(np.stack(decoded), clip)


def test_solid_colour_frames() -> None:
    clip = np.full((3, 10, 12, 3), 77, dtype=np.uint8)
    clip[1] = (30, 200, 10)
    _, decoded, _ = decode(gif_bytes(clip, fps=10))
    np.testing.assert_array_equal(np.stack(decoded), clip)


def test_palette_is_distinct_and_at_most_256_colours() -> None:
    palette = clip_palette(to_levels(smooth_clip()))
    assert palette.dtype == np.uint8 and palette.shape[1] == 3
    assert 200 <= len(palette) <= 256
    assert len(np.unique(palette, axis=0)) == len(palette)


def test_ordered_dither_is_temporally_stable_on_static_content() -> None:
    frame = to_levels(smooth_clip(frames=1))
    static = np.repeat(frame, 4, axis=0)
    indices = map_to_palette(static, clip_palette(static), "ordered")
    assert all(np.array_equal(indices[0], indices[k]) for k in range(1, 4))


# ---------------------------------------------------------------------------------------------------------------
# Files


def test_gif_frame_count_durations_and_forever_loop() -> None:
    clip = smooth_clip()
    image, decoded, durations = decode(gif_bytes(torch.from_numpy(clip), fps=8.0))
    assert len(decoded) == 8
    assert all(abs(d - 125.0) <= 5.0 for d in durations)  # 12.5 cs rounds to 12 or 13 cs
    assert sum(durations) == 1000
    assert image.info["loop"] == 0


def test_gif_loop_count_is_number_of_plays() -> None:
    clip = smooth_clip(frames=3)
    image, _, _ = decode(gif_bytes(clip, fps=5, loop=3))
    assert image.info["loop"] == 2  # NETSCAPE stores the repeats after the first play
    image, _, _ = decode(gif_bytes(clip, fps=5, loop=1))
    assert "loop" not in image.info  # no loop extension: plays once


def test_pingpong_gif_has_10_frames_for_6() -> None:
    clip = smooth_clip(frames=6)
    _, decoded, durations = decode(gif_bytes(clip, fps=10, pingpong=True))
    assert len(decoded) == 10 and durations == [100] * 10
    for k, source in enumerate([0, 1, 2, 3, 4, 5, 4, 3, 2, 1]):
        np.testing.assert_array_equal(decoded[k], decoded[source])


def test_gif_psnr_beats_pillow_default_on_smooth_moving_clip() -> None:
    clip = smooth_clip()
    reference = to_levels(clip)
    _, decoded, _ = decode(gif_bytes(clip, fps=8))
    ours = psnr(decoded, reference)
    images = [Image.fromarray(f) for f in reference]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=125, loop=0)
    _, pillow_decoded, _ = decode(buffer.getvalue())
    assert ours >= 35.0  # measured 35.5 dB
    assert ours >= psnr(pillow_decoded, reference) + 0.5  # Pillow's per-frame median cut: 34.2 dB


@pytest.mark.parametrize("dither", ["ordered", "floyd-steinberg"])
def test_dithered_gifs_decode_with_reasonable_psnr(dither: str) -> None:
    clip = smooth_clip()
    _, decoded, _ = decode(gif_bytes(clip, fps=8, dither=dither))
    assert len(decoded) == 8
    assert psnr(decoded, to_levels(clip)) >= 32.0  # dithering trades PSNR for less banding (measured 33.4 / 33.7)


def test_comment_round_trip() -> None:
    image, _, _ = decode(gif_bytes(smooth_clip(frames=2), fps=8, comment='{"a": 1}'))
    assert image.info["comment"] == b'{"a": 1}'


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("frames", "kwargs", "named"),
    [
        (torch.zeros(0, 8, 8, 3), {}, "frames"),
        (torch.zeros(2, 8, 8, 4), {}, "frames"),
        (torch.zeros(8, 8, 3), {}, "frames"),
        (torch.zeros(2, 8, 8, 3, dtype=torch.int32), {}, "frames"),
        (torch.full((2, 8, 8, 3), float("nan")), {}, "frames"),
        (torch.full((2, 8, 8, 3), float("inf")), {}, "frames"),
        ([[0.0]], {}, "frames"),
        (torch.zeros(2, 8, 8, 3), {"fps": 0.0}, "fps"),
        (torch.zeros(2, 8, 8, 3), {"fps": -3.0}, "fps"),
        (torch.zeros(2, 8, 8, 3), {"fps": float("nan")}, "fps"),
        (torch.zeros(2, 8, 8, 3), {"loop": -1}, "loop"),
        (torch.zeros(2, 8, 8, 3), {"dither": "bogus"}, "dither"),
    ],
)
def test_bad_input_raises_pix2gif_input_error(frames, kwargs, named: str) -> None:
    options = {"fps": 8.0, **kwargs}
    with pytest.raises(Pix2GifInputError, match=f"^{named}"):
        encode_gif(frames, io.BytesIO(), **options)
