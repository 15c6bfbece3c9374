"""Benchmark: our GIF encoder vs Pillow's default GIF save (what diffusers' export_to_gif and VHS image/gif do).

Content: 16 and 64 frames of 512x512 synthetic "photographic" material (there is no photo dataset here): a sky
gradient with multi-octave clouds, a textured ground, hard-edged shaded and textured objects, anti-aliased
text, thin fence posts, vignette and film grain (fixed seed), moved by a smooth zoom (+15 %), rotation (6 deg),
pan and brightness drift (x0.9 -> x1.1) -- the motion perf-scripts/gifbench.py used on the astronaut photo.

Encoders (all write to memory; inputs are the same uint8 frames):
  PILLOW  = ``frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration, loop=0)`` from
            RGB PIL images: per-frame median-cut palette, no dither.
  OURS    = ``encode_gif`` (one palette per clip, own mapping) with dither none / ordered / floyd-steinberg, from
            the uint8 array; ``float-in`` = the same from a float tensor in [0, 1] (ComfyUI IMAGE), conversion timed.

Time: paired, interleaved rounds (the order rotates every round) after one warm-up run of each; per round the
ratio t_PILLOW / t_OURS; medians and p10-p90. Pillow's default costs ~4 s a run at 16 frames and ~15 s at 64 on
the idle 2-core VM, so the default is 15 rounds at 16 frames and 5 at 64 (about 3.5 min idle; longer under load).
Quality: PSNR of the decoded GIF vs the source frames (mean over frames, dB); flicker = mean |(dec_t - dec_t-1)
- (src_t - src_t-1)| over consecutive frames (8-bit levels; palette/dither noise that changes frame to frame).

Usage: python tests/benchmarks/bench_gif.py [--rounds16 N] [--rounds64 N] [--frames 16 64]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageSequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pix2gif_core.video.gif_encoder import encode_gif  # noqa: E402

FPS = 8
SIZE = 512


def smooth_noise(generator: torch.Generator, size: int, octaves: tuple[tuple[int, float], ...], channels: int = 3):
    """Sum of bicubically upsampled random grids: (channels, size, size), roughly zero-mean."""
    out = torch.zeros(channels, size, size)
    for cells, amplitude in octaves:
        grid = torch.rand(1, channels, cells, cells, generator=generator) - 0.5
        out += amplitude * F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0]
    return out


def synthetic_photo(size: int, seed: int = 0) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: a stand-in for a photograph (see the module docstring)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    colour_mix = torch.tensor([[1.0, 0.5, 0.2], [0.4, 1.0, 0.3], [0.2, 0.4, 1.0]])
    octaves = ((3, 0.35), (6, 0.22), (12, 0.14), (24, 0.08), (48, 0.05))
    clouds = torch.einsum("cd,dhw->chw", colour_mix, smooth_noise(generator, size, octaves))
    sky = torch.stack([0.25 + 0.6 * y, 0.45 + 0.3 * y, 0.85 - 0.45 * y]) + clouds
    ground = torch.stack([0.3 + 0.1 * x, 0.42 - 0.1 * y, 0.12 + 0.05 * x]) + 0.5 * clouds
    ground += smooth_noise(generator, size, ((64, 0.2), (128, 0.2), (256, 0.15)), 1)
    ground_mask = (y > 0.62 + 0.05 * torch.sin(7 * x)).float()
    canvas = (sky * (1 - ground_mask) + ground * ground_mask).clamp(0, 1)
    for _ in range(9):  # hard-edged objects with their own lighting and texture
        cx, cy = (int(v) for v in rng.integers(80, size - 80, 2))
        radius = int(rng.integers(30, 110))
        mask_image = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask_image)
        if rng.random() < 0.5:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        else:
            corners = np.sort(rng.uniform(0, 2 * math.pi, 6))
            draw.polygon([(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in corners], fill=255)
        mask = torch.from_numpy(np.asarray(mask_image, dtype=np.float32) / 255.0)
        base = torch.from_numpy(rng.uniform(0.1, 0.9, 3).astype(np.float32))[:, None, None]
        light = 0.7 + 0.5 * ((x - cx / size) * rng.uniform(-3, 3) + (y - cy / size) * rng.uniform(-3, 3))
        texture = base * light + 0.6 * smooth_noise(generator, size, ((32, 0.2), (160, 0.12)))
        canvas = canvas * (1 - mask) + texture.clamp(0, 1) * mask
    image = Image.fromarray((canvas.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=20)
    for row in range(5):  # text: sharp high-frequency detail
        draw.text((size * 0.22, size * 0.3 + 28 * row), f"Pix2Gif sample line {row}  0123456789 ~ ABCxyz",
                  fill=(245, 245, 235) if row % 2 else (15, 15, 35), font=font)
    for post in range(12):  # fence: thin dark lines
        px = int(size * 0.2 + post * 14)
        draw.line((px, int(size * 0.72), px, int(size * 0.8)), fill=(60, 40, 25), width=3)
    photo = np.asarray(image).astype(np.float32) / 255.0
    vignette = 0.75 + 0.25 * np.outer(np.cos(np.linspace(-1, 1, size)), np.cos(np.linspace(-1.2, 1.2, size)))
    photo = photo * vignette[..., None] + rng.normal(0, 0.008, photo.shape)
    return np.clip(photo, 0, 1).astype(np.float32)


def moving_clip(frames: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """(frames, size, size, 3) uint8: zoom + rotation + pan + brightness drift over one synthetic photo."""
    source = torch.from_numpy(synthetic_photo(int(size * 1.5), seed)).permute(2, 0, 1)[None]
    clip = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        scale, angle = 1 / (1.4 * (1 + 0.15 * t)), math.radians(6 * t)
        theta = torch.tensor([[scale * math.cos(angle), -scale * math.sin(angle), 0.04 * t],
                              [scale * math.sin(angle), scale * math.cos(angle), -0.02 * t]])
        grid = F.affine_grid(theta[None], [1, 3, size, size], align_corners=False)
        frame = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        clip.append((frame * (0.9 + 0.2 * t)).clamp(0, 1).permute(1, 2, 0))
    return (torch.stack(clip).numpy() * 255 + 0.5).astype(np.uint8)


def quality(data: bytes, source: np.ndarray) -> tuple[float, float]:
    """(mean per-frame PSNR in dB, flicker in 8-bit levels) of a GIF against its source frames."""
    gif = Image.open(io.BytesIO(data))
    decoded = np.stack([np.asarray(f.convert("RGB"), np.float32) for f in ImageSequence.Iterator(gif)])
    assert len(decoded) == len(source), f"decoded {len(decoded)} frames, expected {len(source)}"
    reference = source.astype(np.float32)
    mse = ((decoded - reference) ** 2).mean(axis=(1, 2, 3))
    psnr = float(np.mean(10 * np.log10(255.0**2 / mse)))
    flicker = float(np.mean(np.abs(np.diff(decoded, axis=0) - np.diff(reference, axis=0))))
    return psnr, flicker


def encoders(clip: np.ndarray) -> dict[str, Callable[[], bytes]]:
    """Name -> zero-argument function returning the GIF bytes of ``clip``."""
    images = [Image.fromarray(f) for f in clip]
    as_float = torch.from_numpy(clip).float() / 255.0

    def pillow_default() -> bytes:
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 // FPS, loop=0)
        return buffer.getvalue()

    def ours(frames: np.ndarray | torch.Tensor, dither: str) -> Callable[[], bytes]:
        def run() -> bytes:
            buffer = io.BytesIO()
            encode_gif(frames, buffer, fps=FPS, dither=dither)
            return buffer.getvalue()

        return run

    return {
        "Pillow default": pillow_default,
        "ours, dither none": ours(clip, "none"),
        "ours, dither none, float-in": ours(as_float, "none"),
        "ours, dither ordered": ours(clip, "ordered"),
        "ours, dither floyd-steinberg": ours(clip, "floyd-steinberg"),
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench(frames: int, rounds: int) -> list[str]:
    """Run the paired rounds for one clip length; return markdown table rows."""
    clip = moving_clip(frames)
    runs = encoders(clip)
    names = list(runs)
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up, also the files measured for quality
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    baseline = times["Pillow default"]
    rows = []
    for name in names:
        ms = [1000 * t / frames for t in times[name]]
        ratios = [b / t for b, t in zip(baseline, times[name])]
        psnr, flicker = quality(outputs[name], clip)
        rows.append(
            f"| {frames} | {name} | {statistics.median(ms):.1f} ({percentile(ms, 10):.1f}-{percentile(ms, 90):.1f}) "
            f"| {statistics.median(ratios):.1f}x ({percentile(ratios, 10):.1f}-{percentile(ratios, 90):.1f}) "
            f"| {len(outputs[name]) / frames / 1000:.1f} | {psnr:.2f} | {flicker:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds16", type=int, default=15, help="paired rounds at 16 frames")
    parser.add_argument("--rounds64", type=int, default=5, help="paired rounds at 64 frames")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"Pillow {Image.__version__}, torch {torch.__version__}, numpy {np.__version__}, {SIZE}x{SIZE}, {FPS} fps")
    print("| frames | encoder | ms/frame median (p10-p90) | speed-up vs Pillow default, paired (p10-p90) "
          "| kB/frame | PSNR dB | flicker |")
    print("|---|---|---|---|---|---|---|")
    for frames in args.frames:
        bench(frames, args.rounds16 if frames <= 16 else args.rounds64)


if __name__ == "__main__":
    main()
