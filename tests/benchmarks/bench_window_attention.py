"""Benchmark: AnimateZero window temporal attention and shared first-frame K/V against their plain counterparts.

fp32, 8 heads, 2 videos (CFG batch), SD1.5 shapes, baseline and candidate measured in the same run:

1. temporal attention as ``TemporalSelfAttention`` calls it (PE add, Q/K/V projections, attention; before
   ``to_out``): ``global_temporal_attention`` vs ``PositionCorrectedWindowAttention()`` (W = F);
2. the same call, the window attention before the fused version (``window_attention.py`` at commit
   :data:`PREVIOUS_WINDOW_COMMIT`, read with ``git show``) vs the current one – the CPU "not slower" check;
   the current one is the decomposed path on CPU, so the fused path (``fused=True``, the accelerator default)
   is measured against both as well;
3. spatial self-attention with keys/values from frame 0 (``shared_kv_attention``, replace and concat) vs plain
   spatial self-attention, per attention layer.

Shapes: level 0 is C=320 at 64×64 positions and level 3 is C=1280 at 8×8; F from ``--frames`` (16 32). On CPU
the level-0 rows are timed at ``--level0-size`` (default 32: 2·32·32 = 2048 sequences instead of 8192, to fit
the time budget; sequences are independent, so the work per sequence is the same) and their peak memory is also
measured at the real 64×64 (``--real-memory``). Shared K/V runs at T = ``--spatial-size``² tokens (default
32×32), B·F = 32 (``--no-spatial`` skips it).

Time: paired, interleaved A/B (order alternates), ratio candidate/baseline per pair, median and p10–p90.
Peak memory: ``peak_bytes`` of bench_motion_module.py (CUDA: max_memory_allocated; CPU: peak of live tensor
bytes from the profiler's ``[memory]`` events, ``profile_memory=True``), above the level before the call.

Usage: python tests/benchmarks/bench_window_attention.py [--device cpu|cuda] [--pairs N] [--level0-size S]
       [--frames F ...] [--spatial-size S] [--no-spatial] [--real-memory | --no-real-memory]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_motion_module import paired, peak_bytes  # noqa: E402

from pix2gif_core.animatediff.motion_module import TemporalSelfAttention, global_temporal_attention  # noqa: E402
from pix2gif_core.animatezero.shared_kv_attention import shared_kv_attention  # noqa: E402
from pix2gif_core.animatezero.window_attention import PositionCorrectedWindowAttention  # noqa: E402

HEADS, VIDEOS = 8, 2
#: last commit with the window attention before it kept frame 1 and ran through the attention kernel
PREVIOUS_WINDOW_COMMIT = "fe8a7f8"
Case = tuple[str, str, Callable[[], Tensor], Callable[[], Tensor], int]


def previous_window_attention() -> type:
    """``PositionCorrectedWindowAttention`` of :data:`PREVIOUS_WINDOW_COMMIT`, loaded as a module of the package."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    source = subprocess.run(["git", "show", f"{PREVIOUS_WINDOW_COMMIT}:pix2gif_core/animatezero/window_attention.py"],
                            cwd=root, check=True, capture_output=True, text=True).stdout
    name = "pix2gif_core.animatezero.previous_window_attention"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = "pix2gif_core.animatezero"
    sys.modules[name] = module  # dataclasses look the module up
    exec(compile(source, f"{PREVIOUS_WINDOW_COMMIT}:window_attention.py", "exec"), module.__dict__)
    return module.PositionCorrectedWindowAttention


def plain_self_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Spatial self-attention per frame, ``(B·F, T, C)`` → ``(B·F, T, C)``."""
    split = lambda t: rearrange(t, "b t (h d) -> b h t d", h=HEADS)  # noqa: E731
    attended = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    return rearrange(attended, "b h t d -> b t (h d)")


def temporal_cases(channels: int, size: int, frames: int, pairs: int, device: torch.device) -> list[Case]:
    attn = TemporalSelfAttention(channels, pe_length=32).to(device)
    hidden = torch.randn(VIDEOS * size * size, frames, channels, device=device)
    pe = attn.position_encoding(frames, hidden)
    window, previous = PositionCorrectedWindowAttention(), previous_window_attention()()
    fused = PositionCorrectedWindowAttention(fused=True)
    shape = f"C={channels} {size}x{size} F={frames} (N={hidden.shape[0]})"
    return [
        ("temporal attention, window vs global", shape,
         lambda: global_temporal_attention(attn, hidden, pe), lambda: window(attn, hidden, pe), pairs),
        (f"temporal attention, window vs window before the fused version ({PREVIOUS_WINDOW_COMMIT})", shape,
         lambda: previous(attn, hidden, pe), lambda: window(attn, hidden, pe), pairs),
        (f"temporal attention, FUSED window vs window before the fused version ({PREVIOUS_WINDOW_COMMIT})", shape,
         lambda: previous(attn, hidden, pe), lambda: fused(attn, hidden, pe), pairs),
        ("temporal attention, FUSED window vs global", shape,
         lambda: global_temporal_attention(attn, hidden, pe), lambda: fused(attn, hidden, pe), pairs),
    ]


def spatial_cases(size: int, pairs: int, device: torch.device) -> list[Case]:
    frames, channels = 16, 320
    q, k, v = (torch.randn(VIDEOS * frames, size * size, channels, device=device) for _ in range(3))
    shape = f"C=320 T={size}x{size} B·F={VIDEOS * frames}"
    return [
        (f"spatial self-attn, shared K/V {mode} vs plain", shape, lambda: plain_self_attention(q, k, v),
         lambda mode=mode: shared_kv_attention(q, k, v, HEADS, frames, mode), pairs)
        for mode in ("replace", "concat")
    ]


def real_shape_memory(frames: int, device: torch.device) -> tuple[float, float]:
    """Peak MiB of global and window temporal attention at the real level-0 shape (C=320, 64×64)."""
    attn = TemporalSelfAttention(320, pe_length=32).to(device)
    hidden = torch.randn(VIDEOS * 64 * 64, frames, 320, device=device)
    pe = attn.position_encoding(frames, hidden)
    global_peak, _ = peak_bytes(lambda: global_temporal_attention(attn, hidden, pe), device)
    window_peak, _ = peak_bytes(lambda: PositionCorrectedWindowAttention()(attn, hidden, pe), device)
    return global_peak / 2**20, window_peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--level0-size", type=int, default=None, help="level-0 positions per side (CPU default 32)")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--spatial-size", type=int, default=32, help="shared K/V tokens per side (64 = 512² images)")
    parser.add_argument("--spatial", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--real-memory", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device(args.device)
    level0 = args.level0_size or (32 if device.type == "cpu" else 64)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, fp32", flush=True)
    rows = []
    with torch.no_grad():
        cases = []
        for frames in args.frames:
            cases += temporal_cases(320, level0, frames, args.pairs, device)
            cases += temporal_cases(1280, 8, frames, args.pairs, device)
        if args.spatial:
            cases += spatial_cases(args.spatial_size, args.pairs, device)
        for name, shape, baseline, candidate, pairs in cases:
            baseline_peak, _ = peak_bytes(baseline, device)  # also the warm-up
            candidate_peak, _ = peak_bytes(candidate, device)
            row = paired(name, baseline, candidate, pairs, 0, device)
            row.update(shape=shape, base_mib=baseline_peak / 2**20, cand_mib=candidate_peak / 2**20)
            rows.append(row)
            print(f"  {name} | {shape}: {row['ratio']:.2f}", flush=True)
        memory = {frames: real_shape_memory(frames, device) for frames in args.frames} if args.real_memory else {}
    print("\n| case | shape | pairs | baseline ms | candidate ms | time ratio median [p10–p90] | baseline peak MiB "
          "| candidate peak MiB | memory ratio |\n|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['shape']} | {row['pairs']} | {row['naive_ms']:.1f} | {row['ours_ms']:.1f} | "
              f"{row['ratio']:.2f} [{row['p10']:.2f}–{row['p90']:.2f}] | {row['base_mib']:.1f} | "
              f"{row['cand_mib']:.1f} | {row['cand_mib'] / row['base_mib']:.2f} |")
    for frames, (global_mib, window_mib) in memory.items():
        print(f"| temporal attention peak memory, real level 0 | C=320 64x64 F={frames} (N=8192) | 1 | – | – | – | "
              f"{global_mib:.1f} | {window_mib:.1f} | {window_mib / global_mib:.2f} |")


if __name__ == "__main__":
    main()
