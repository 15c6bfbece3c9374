"""Benchmark: AnimateZero's first-frame keys/values recorded in the image pass and injected in the video pass.

1. Memory of the recording, analytic at SD1.5 512² (the 16 spatial self-attentions: 5 at 64² tokens × 320
   channels, 5 at 32² × 640, 5 at 16² × 1280, 1 at 8² × 1280; keys and values, per evaluation and CFG branch),
   and measured on CPU at 256²: a :class:`FeatureRecorder` fed the keys/values the host hands ``attn1`` at those
   shapes for ``--steps`` evaluations of a CFG batch, the bytes it holds counted by ``feature_bytes`` and the
   process's resident memory growth (``/proc/self/statm``).
2. Video-pass cost per spatial self-attention layer: K/V sharing with the injected image-pass keys/values
   (``first_frame_anchors`` + ``shared_kv_attention(anchors=…)``) vs sharing the video's own frame 0 (the
   previous default), both with the default kernel, paired and interleaved (ratio per pair, median and
   p10–p90), B·F = 2 × 16 frames, at each SD1.5 level for ``--size``² images, replace and concat.
3. A K/V start/end range decided on the device (``shared_kv_attention(active=<0-dim tensor>)``, the path taken
   on accelerators) vs a σ read and Python branch (the CPU path): inside the range against the whole-denoising
   sharing, outside it against the frames' own attention (SDPA), same shapes and pairing, timed on the CPU.

Usage: python tests/benchmarks/bench_first_frame_kv.py [--pairs N] [--size PX] [--steps N] [--only-range]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_motion_module import paired  # noqa: E402

from pix2gif_core.animatezero.first_frame_features import (FeatureRecorder, feature_bytes,  # noqa: E402
                                                           first_frame_anchors)
from pix2gif_core.animatezero.shared_kv_attention import shared_kv_attention  # noqa: E402
from pix2gif_core.attention import sdpa_attention  # noqa: E402

HEADS, VIDEOS, FRAMES = 8, 2, 16
#: SD1.5 spatial self-attentions: (latent downscale of the level, channels, layers at that level)
SD15_LAYERS = ((1, 320, 5), (2, 640, 5), (4, 1280, 5), (8, 1280, 1))


def layer_shapes(image_size: int) -> list[tuple[tuple[str, int, int], int, int]]:
    """``(layer key, tokens, channels)`` of every SD1.5 spatial self-attention for ``image_size``² images."""
    latent = image_size // 8
    shapes = []
    for level, (scale, channels, count) in enumerate(SD15_LAYERS):
        tokens = (latent // scale) ** 2
        shapes += [(("level", level, index), tokens, channels) for index in range(count)]
    return shapes


def analytic_bytes(image_size: int, steps: int, branches: int, element_size: int) -> int:
    return 2 * steps * branches * element_size * sum(tokens * channels for _, tokens, channels in
                                                     layer_shapes(image_size))


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured_recording(image_size: int, steps: int) -> tuple[int, int]:
    """Bytes held by the recorded features of ``steps`` CFG evaluations (counted, and resident growth)."""
    recorder, evaluations = FeatureRecorder(lambda t: t), []
    before = resident_bytes()
    for _ in range(steps):
        for layer, tokens, channels in layer_shapes(image_size):
            keys, values = torch.randn(VIDEOS, tokens, channels), torch.randn(VIDEOS, tokens, channels)
            recorder.record([1, 0], layer, keys, values)
            del keys, values
        evaluations.append(recorder.take())
    return sum(feature_bytes(features) for features in evaluations), resident_bytes() - before


def injection_cases(image_size: int, pairs: int) -> list[dict]:
    rows = []
    latent = image_size // 8
    for level, (scale, channels, _) in enumerate(SD15_LAYERS):
        tokens = (latent // scale) ** 2
        q, k, v = (torch.randn(VIDEOS * FRAMES, tokens, channels) for _ in range(3))
        layer = ("level", level, 0)
        features = {(branch, layer): (torch.randn(tokens, channels), torch.randn(tokens, channels))
                    for branch in (0, 1)}
        for mode in ("replace", "concat"):
            def own(mode=mode):
                return shared_kv_attention(q, k, v, HEADS, FRAMES, mode)

            def injected(mode=mode):
                anchor_k, anchor_v, _ = first_frame_anchors(k, v, FRAMES, [1, 0], layer, features)
                return shared_kv_attention(q, k, v, HEADS, FRAMES, mode, anchors=(anchor_k, anchor_v))

            row = paired(f"shared K/V {mode}, injected vs own frame 0", own, injected, pairs, 2, torch.device("cpu"))
            row["shape"] = f"T={latent // scale}x{latent // scale} C={channels} B·F={VIDEOS * FRAMES}"
            rows.append(row)
            print(f"  {row['case']} | {row['shape']}: {row['ratio']:.3f}", flush=True)
    return rows


def own_attention(q, k, v):
    """Each frame's plain self-attention through the default kernel (what the host computes outside the range)."""
    def split(t):
        return t.reshape(t.shape[0], t.shape[1], HEADS, -1).transpose(1, 2)

    return sdpa_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(q.shape)


def range_cases(image_size: int, pairs: int) -> list[dict]:
    rows = []
    latent = image_size // 8
    for level, (scale, channels, _) in enumerate(SD15_LAYERS):
        tokens = (latent // scale) ** 2
        q, k, v = (torch.randn(VIDEOS * FRAMES, tokens, channels) for _ in range(3))
        for mode in ("replace", "concat"):
            for inside in (True, False):
                active = torch.tensor(inside)

                def before(mode=mode, inside=inside):
                    return shared_kv_attention(q, k, v, HEADS, FRAMES, mode) if inside else own_attention(q, k, v)

                def decided(mode=mode, active=active):
                    return shared_kv_attention(q, k, v, HEADS, FRAMES, mode, active=active)

                where = "inside" if inside else "outside"
                row = paired(f"K/V range {mode}, {where}: on the device vs σ read", before, decided, pairs, 2,
                             torch.device("cpu"))
                row["shape"] = f"T={latent // scale}x{latent // scale} C={channels} B·F={VIDEOS * FRAMES}"
                rows.append(row)
                print(f"  {row['case']} | {row['shape']}: {row['ratio']:.3f}", flush=True)
    return rows


def print_rows(rows: list[dict], before: str, after: str) -> None:
    print(f"\n| case | shape | pairs | {before} ms | {after} ms | ratio median [p10–p90] |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['shape']} | {row['pairs']} | {row['naive_ms']:.2f} | {row['ours_ms']:.2f} | "
              f"{row['ratio']:.3f} [{row['p10']:.3f}–{row['p90']:.3f}] |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels for the timed cases")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only-range", action="store_true", help="time the K/V range cases only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}, fp32", flush=True)
    if not args.only_range:
        print("\n| recording | size | evaluations × branches | bytes |\n|---|---|---|---|")
        for size in (512, 256):
            for dtype, element_size in (("float32", 4), ("float16", 2)):
                total = analytic_bytes(size, args.steps, VIDEOS, element_size)
                print(f"| analytic, {dtype} | {size}² | {args.steps} × {VIDEOS} | {total / 2**20:.0f} MiB "
                      f"({total / args.steps / 2**20:.1f} MiB per evaluation) |")
        counted, resident = measured_recording(256, args.steps)
        print(f"| measured on CPU, float32, held by the recorded features | 256² | {args.steps} × {VIDEOS} | "
              f"{counted / 2**20:.1f} MiB counted, {resident / 2**20:.1f} MiB resident growth |")
        with torch.no_grad():
            print_rows(injection_cases(args.size, args.pairs), "own frame 0", "injected")
    with torch.no_grad():
        print_rows(range_cases(args.size, args.pairs), "σ read", "on the device")


if __name__ == "__main__":
    main()
