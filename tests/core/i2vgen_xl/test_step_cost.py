"""The meta-device step cost against real runs of a small model, and the native size against a 24 GB GPU."""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from pix2gif_core.i2vgen_xl.config import I2VGenXLConfig
from pix2gif_core.i2vgen_xl.step_cost import trace_step
from pix2gif_core.i2vgen_xl.unet import I2VGenXLUNet

SMALL = I2VGenXLConfig(block_out_channels=(32, 64, 64), attention_levels=(True, True, False), layers_per_block=1,
                       cross_attention_dim=64, head_dim=8)
GPU_BUDGET = 24 * 10**9


def _real_step(frames: int, height: int, width: int):
    """FLOPs (flop_counter, SDPA included) and the CPU allocator's peak above the start (profiler) of a real
    float32 step."""
    torch.manual_seed(0)
    unet = I2VGenXLUNet(SMALL).eval()
    h, w = height // 8, width // 8
    inputs = (torch.randn(2, 4, frames, h, w), torch.tensor([500, 500]), torch.randn(2, 77, 64),
              torch.randn(2, 4, h, w), torch.randn(2, 64), torch.tensor([16.0, 16.0]))
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        unet(*inputs)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        unet(*inputs)
    live = peak = 0
    for _, size in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                          if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU):
        live += size
        peak = max(peak, live)
    return flops.get_total_flops(), peak


def _analytic_attention_flops(frames: int, height: int, width: int, videos: int = 2) -> int:
    """4·N·Lq·Lk·(heads·d) per attention (QKᵀ and PV), summed over the layers of ``SMALL``."""
    tokens = [-(-height // (8 << level)) * -(-width // (8 << level)) for level in range(3)]  # stride-2 convs round up
    images = videos * frames

    def spatial(level: int, channels: int) -> int:  # self-attention + cross-attention to 145 tokens
        return 4 * images * tokens[level] * (tokens[level] + 145) * channels

    def temporal(level: int, inner: int) -> int:  # two self-attentions over the frames of every pixel
        return 2 * 4 * videos * tokens[level] * frames * frames * inner

    per_layer = [spatial(0, 32) + temporal(0, 32), spatial(1, 64) + temporal(1, 64), spatial(2, 64) + temporal(2, 64)]
    layers = [1 + 2, 1 + 2, 1]  # down + up layers with attention at levels 0 and 1; the mid block at level 2
    transformer_in = temporal(0, 8 * 8)
    image_latent_encoder = 4 * videos * tokens[0] * frames * frames * 8  # one attention, 2 heads × 4
    return sum(n * f for n, f in zip(layers, per_layer)) + transformer_in + image_latent_encoder


def test_flops_and_peak_memory_match_a_real_run():
    frames, height, width = 3, 64, 48
    real_flops, real_peak = _real_step(frames, height, width)
    traced = trace_step(SMALL, 2, frames, height, width, torch.float32)
    # flop_counter has no formula for CPU's fused attention: attention is checked against the analytic count
    assert traced.attention_flops == _analytic_attention_flops(frames, height, width)
    assert traced.flops - traced.attention_flops == real_flops
    assert 0.8 * real_peak <= traced.peak_activation_bytes <= 1.25 * real_peak, (traced, real_peak)


def test_sixteen_frames_at_1280x704_fit_a_24_gb_gpu_in_fp16():
    cost = trace_step(I2VGenXLConfig(), videos=2, frames=16, height=704, width=1280)  # a CFG batch
    assert cost.weight_bytes == 2 * sum(p.numel() for p in I2VGenXLUNet(I2VGenXLConfig()).to("meta").parameters())
    assert cost.peak_bytes < GPU_BUDGET, f"{cost.peak_bytes / 1e9:.1f} GB"
