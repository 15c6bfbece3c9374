"""Parametric warp and motion-magnitude measurement at GIF shapes, as paired ratios against same-run baselines.

16 frames × 3 × 512 × 512 fp32 on CPU. Baselines: ``clone`` of the same tensor (memory bandwidth proxy) and one
3×3 conv 3→3 of the same tensor. Each pair times baseline A and candidate B back to back (order alternating),
after one warm-up; reported: median A and B time, median B/A and p10–p90 of the per-pair ratios.

Run: ``OMP_NUM_THREADS=1 .comfy-ci/venv/bin/python tests/benchmarks/bench_warp.py`` (about 2 minutes on 2 cores).
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pix2gif_core.warps.motion_field import motion_field, warp_frames  # noqa: E402
from pix2gif_core.metrics.motion_magnitude import measure_motion  # noqa: E402

FRAMES, CHANNELS, SIDE = 16, 3, 512
PAIRS = int(os.environ.get("PAIRS", "15"))


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(name: str, baseline: Callable[[], object], candidate: Callable[[], object], pairs: int = PAIRS) -> None:
    baseline(), candidate()
    times_a, times_b = [], []
    for index in range(pairs):
        if index % 2 == 0:
            times_a.append(_seconds(baseline)), times_b.append(_seconds(candidate))
        else:
            times_b.append(_seconds(candidate)), times_a.append(_seconds(baseline))
    ratios = sorted(b / a for a, b in zip(times_a, times_b))
    p10, p90 = ratios[int(0.1 * (pairs - 1))], ratios[int(round(0.9 * (pairs - 1)))]
    print(f"| {name} | {statistics.median(times_a) * 1e3:.1f} | {statistics.median(times_b) * 1e3:.1f} |"
          f" {statistics.median(ratios):.2f} [{p10:.2f}–{p90:.2f}] |", flush=True)


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()},"
          f" {PAIRS} pairs")
    frames = torch.rand(FRAMES, CHANNELS, SIDE, SIDE)
    source = frames[:1]
    conv = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
    field = motion_field("rotate", 12.0, FRAMES, SIDE, SIDE)
    build_and_warp = lambda: warp_frames(source, motion_field("rotate", 12.0, FRAMES, SIDE, SIDE))  # noqa: E731
    clone = frames.clone
    conv3x3 = lambda: conv(frames)  # noqa: E731
    print("| B vs A (16×3×512², fp32, CPU) | A ms | B ms | B/A median [p10–p90] |")
    print("|---|---|---|---|")
    with torch.no_grad():
        paired("warp reflect (field + grid cached) vs clone", clone, lambda: warp_frames(source, field))
        paired("warp reflect (field + grid cached) vs conv3×3", conv3x3, lambda: warp_frames(source, field))
        paired("field build + warp reflect vs conv3×3", conv3x3, build_and_warp)
        paired("warp crop (field cached, crop per call) vs conv3×3", conv3x3, lambda: warp_frames(source, field, edge="crop"))
        clip = warp_frames(source, field).clamp(0, 1)
        paired("measure_motion, 16 frames vs conv3×3", conv3x3, lambda: measure_motion(clip), pairs=PAIRS)


if __name__ == "__main__":
    main()
