"""Benchmark: the I2VGen-XL UNet step. First the meta-device trace of the released model (``step_cost``: FLOPs,
attention FLOPs, peak activations, weights) for a CFG batch of 16 frames at 640×352 and 1280×704 in fp16; then
one step of a reduced-width model on CPU, ours vs diffusers' ``I2VGenXLUNet`` (the peer) on the same random
weights, fp32, baseline and candidate measured in the same run (paired, interleaved; ratio ours/diffusers per
pair, median and p10–p90).

Reduced model: the released structure (4 levels, attention at the first three, 2 ResNets per level) at a quarter
of the width (64/128/256/256 channels, 32-wide heads, 32 GroupNorm groups), context 256; input 2 videos (a CFG
batch) × ``--frames`` × 4 × ``--size``².

Usage: python tests/benchmarks/bench_i2vgen_xl.py [--pairs N] [--frames F] [--size S] [--trace-only]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_motion_module import paired  # noqa: E402
from diffusers.models.unets.unet_i2vgen_xl import I2VGenXLUNet as PeerUNet  # noqa: E402

from pix2gif_core.i2vgen_xl.checkpoint import unet_from_state_dict  # noqa: E402
from pix2gif_core.i2vgen_xl.config import I2VGenXLConfig  # noqa: E402
from pix2gif_core.i2vgen_xl.step_cost import trace_step  # noqa: E402

CONFIG = {"block_out_channels": (64, 128, 256, 256), "layers_per_block": 2, "norm_num_groups": 32,
          "cross_attention_dim": 256, "attention_head_dim": 32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--trace-only", action="store_true")
    args = parser.parse_args()
    print("| released UNet, 2 × 16 frames, fp16 | TFLOP | of which attention | peak activations GiB | weights GiB |")
    for width, height in ((640, 352), (1280, 704)):
        cost = trace_step(I2VGenXLConfig(), videos=2, frames=16, height=height, width=width)
        print(f"| {width}×{height} | {cost.flops / 1e12:.1f} | {cost.attention_flops / 1e12:.1f} | "
              f"{cost.peak_activation_bytes / 2**30:.2f} | {cost.weight_bytes / 2**30:.2f} |")
    if args.trace_only:
        return
    torch.manual_seed(0)
    peer = PeerUNet(**CONFIG).eval()
    with torch.no_grad():
        for parameter in peer.parameters():
            parameter.normal_(0, 0.05)
    ours = unet_from_state_dict(peer.state_dict(), "peer", CONFIG)
    b, f, s, d = 2, args.frames, args.size, CONFIG["cross_attention_dim"]
    x, latent = torch.randn(b, 4, f, s, s), torch.randn(b, 4, s, s)
    t, fps, text, image = torch.tensor([500, 500]), torch.tensor([16.0, 16.0]), torch.randn(b, 77, d), torch.randn(b, d)
    sequence = torch.cat([latent[:, :, None]] + [torch.ones_like(latent[:, :, None]) * (k + 1) / (f - 1)
                                                 for k in range(f - 1)], dim=2)

    def run_peer():
        with torch.no_grad():
            return peer(x, t, fps, sequence, image, text, return_dict=False)[0]

    def run_ours():
        with torch.no_grad():
            return ours(x, t, text, latent, image, fps)

    difference = (run_peer() - run_ours()).abs().max().item()
    row = paired("one UNet step", run_peer, run_ours, args.pairs, 1, torch.device("cpu"))
    print(f"shape 2×{f}×4×{s}², max |ours − diffusers| = {difference:.2e}")
    print("| case | diffusers ms | ours ms | ours/diffusers median [p10–p90] |")
    print(f"| {row['case']} | {row['naive_ms']:.0f} | {row['ours_ms']:.0f} | "
          f"{row['ratio']:.2f} [{row['p10']:.2f}–{row['p90']:.2f}] |")


if __name__ == "__main__":
    main()
