"""Benchmark: one AnimateDiff motion module at the SD1.5 level-0 shape, ours vs a naive reference.

Shape: x (B·F, C, H, W) = (2·16, 320, 64, 64) — 16 frames, CFG batch 2, 512² latents — fp32.
OURS  = ``MotionModule.forward`` (tokens laid out once as (B·H·W, F, C), fused SDPA attention).
NAIVE = the same weights run the official way (``VersatileAttention``): tokens (B·F, H·W, C), every attention
        rearranges to (B·H·W, F, C) and back, scores q·kᵀ/√d and their softmax materialised, then bmm with v.
Also the attention core alone (projected q, k, v → attended values) at the same shape.

Time: paired, interleaved A/B (order alternates), ratio OURS/NAIVE per pair, median and p10–p90.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the level before the call; on CPU the peak of
live bytes from torch's CPU allocator during the call (sum of the profiler's ``[memory]`` alloc/free events in
time order, ``profile_memory=True``) above the level before it — tensors only, not the Python heap or RSS.

A full-module forward takes ~20–30 s on one core of the 2-core VM, so the default uses 3 full-module pairs
(whole script ≈ 3 min); ``--size 16`` is a quick smoke run; pass ``--pairs 15`` for the recorded figures (≈ 15 min).

Usage: python tests/benchmarks/bench_motion_module.py [--device cpu|cuda] [--pairs N] [--core-pairs N]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Callable

import torch
from einops import rearrange
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pix2gif_core.animatediff.motion_module import MotionModule, TemporalSelfAttention  # noqa: E402

CHANNELS, FRAMES, VIDEOS = 320, 16, 2


def naive_attention_core(attention: TemporalSelfAttention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Explicit ``softmax(q·kᵀ/√d)·v`` per head with materialised scores; ``(N, F, C)`` → ``(N, F, C)``."""
    heads = attention.heads
    q, k, v = (rearrange(t, "n f (h d) -> (n h) f d", h=heads) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.baddbmm(q.new_empty(q.shape[0], q.shape[1], k.shape[1]), q, k.transpose(1, 2), beta=0, alpha=scale)
    return rearrange(torch.bmm(scores.softmax(dim=-1), v), "(n h) f d -> n f (h d)", h=heads)


def naive_attention(attention: TemporalSelfAttention, hidden: Tensor, video_length: int) -> Tensor:
    """Official-layout temporal attention on ``(B·F, H·W, C)`` tokens (rearranged in and out per call)."""
    positions = hidden.shape[1]
    tokens = rearrange(hidden, "(b f) d c -> (b d) f c", f=video_length) + attention.pe[:video_length]
    attended = naive_attention_core(attention, attention.to_q(tokens), attention.to_k(tokens), attention.to_v(tokens))
    return rearrange(attention.to_out(attended), "(b d) f c -> (b f) d c", d=positions)


def naive_motion_module(module: MotionModule, x: Tensor, video_length: int) -> Tensor:
    """The motion module as the official code runs it, with ``module``'s weights."""
    transformer = module.temporal_transformer
    height = x.shape[2]
    hidden = transformer.proj_in(rearrange(transformer.norm(x), "n c h w -> n (h w) c"))
    for block in transformer.transformer_blocks:
        for attention, norm in zip(block.attention_blocks, block.norms):
            hidden = naive_attention(attention, norm(hidden), video_length) + hidden
        hidden = block.ff(block.ff_norm(hidden)) + hidden
    return rearrange(transformer.proj_out(hidden), "n (h w) c -> n c h w", h=height) + x


def timed(fn: Callable[[], Tensor], device: torch.device) -> float:
    """Seconds for one call (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_bytes(fn: Callable[[], Tensor], device: torch.device) -> tuple[int, Tensor]:
    """Peak bytes allocated by torch during ``fn`` above the level before it (see module docstring), and
    ``fn``'s output."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        output = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, output
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        output = fn()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, output


def paired(
    name: str, naive: Callable[[], Tensor], ours: Callable[[], Tensor], pairs: int, warmups: int, device: torch.device
) -> dict[str, float | str | int]:
    """Interleaved A/B timing; ratio = ours / naive per pair."""
    for _ in range(warmups):
        naive()
        ours()
    naive_s, ours_s, ratios = [], [], []
    for index in range(pairs):
        if index % 2 == 0:
            a, b = timed(naive, device), timed(ours, device)
        else:
            b, a = timed(ours, device), timed(naive, device)
        naive_s.append(a)
        ours_s.append(b)
        ratios.append(b / a)
    ratios.sort()
    quantile = lambda p: ratios[min(len(ratios) - 1, int(p * len(ratios)))]  # noqa: E731
    return dict(
        case=name,
        naive_ms=statistics.median(naive_s) * 1e3,
        ours_ms=statistics.median(ours_s) * 1e3,
        ratio=statistics.median(ratios),
        p10=quantile(0.1),
        p90=quantile(0.9),
        pairs=pairs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--pairs", type=int, default=3, help="full-module pairs (15 for recorded figures)")
    parser.add_argument("--core-pairs", type=int, default=15, help="attention-core pairs")
    parser.add_argument("--size", type=int, default=64, help="latent height = width (64 = 512² images)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device(args.device)

    module = MotionModule(CHANNELS, pe_length=32).to(device).eval()
    x = torch.randn(VIDEOS * FRAMES, CHANNELS, args.size, args.size, device=device)
    attention = module.temporal_transformer.transformer_blocks[0].attention_blocks[0]
    q, k, v = (torch.randn(VIDEOS * args.size**2, FRAMES, CHANNELS, device=device) for _ in range(3))
    cases = {
        "motion module (full layer)": (
            lambda: naive_motion_module(module, x, FRAMES),
            lambda: module(x, FRAMES),
            args.pairs,
            0,  # the memory runs below are the warm-up
        ),
        "attention core (q,k,v -> values)": (
            lambda: naive_attention_core(attention, q, k, v),
            lambda: attention.attend(q, k, v),
            args.core_pairs,
            3,
        ),
    }
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"x {tuple(x.shape)} fp32, attention tokens {tuple(q.shape)}",
        flush=True,
    )
    rows = []
    with torch.no_grad():
        for name, (naive, ours, pairs, warmups) in cases.items():
            naive_peak, naive_out = peak_bytes(naive, device)
            ours_peak, ours_out = peak_bytes(ours, device)
            error = (ours_out - naive_out).abs().max().item()
            del naive_out, ours_out
            row = paired(name, naive, ours, pairs, warmups, device)
            row.update(max_abs_diff=error, naive_peak_mib=naive_peak / 2**20, ours_peak_mib=ours_peak / 2**20)
            rows.append(row)
            print(f"  done: {name}", flush=True)
    print(
        f"\n| case | pairs | naive ms | ours ms | ours/naive median [p10–p90] | naive peak MiB | ours peak MiB "
        "| max abs diff |\n|---|---|---|---|---|---|---|---|"
    )
    for row in rows:
        print(
            f"| {row['case']} | {row['pairs']} | {row['naive_ms']:.1f} | {row['ours_ms']:.1f} | "
            f"{row['ratio']:.3f} [{row['p10']:.3f}–{row['p90']:.3f}] | {row['naive_peak_mib']:.0f} | "
            f"{row['ours_peak_mib']:.0f} | {row['max_abs_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
