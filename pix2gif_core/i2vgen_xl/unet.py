"""The I2VGen-XL 3-D UNet (methods.md §6.2), in diffusers' parameter names.

Inputs per video: the noisy latent, the timestep, 77 text tokens, the first frame's VAE latent, the projected
CLIP image embedding and the fps. The context every spatial cross-attention sees is 145 tokens:
[text 77 | first-frame latent 64 | CLIP image 4]; the first-frame latent also enters as 4 extra input channels
(a per-frame conv stack and a temporal transformer over [latent, then constant frames (k+1)/(F−1)]).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention import AttentionKernel, sdpa_attention
from .config import LATENT_CHANNELS, TRANSFORMER_IN_HEADS, I2VGenXLConfig
from .layers import (Attention, Downsample, ImageLatentTemporalEncoder, ResnetBlock, SpatialTransformer,
                     TemporalConvStack, TemporalTransformer, Upsample, sinusoidal_embedding)

#: CLIP-image tokens made by ``context_embedding`` (one per latent channel in diffusers' construction)
IMAGE_TOKENS = LATENT_CHANNELS
#: the first-frame latent is pooled to 32×32 and strided twice: 8×8 context tokens at any size
IMAGE_LATENT_POOL = 32


class _Embedding(nn.Sequential):
    """Linear, SiLU, Linear – keys ``0`` and ``2``."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__(nn.Linear(dim_in, hidden), nn.SiLU(), nn.Linear(hidden, dim_out))


class _TimeEmbedding(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim_in, dim_out)
        self.linear_2 = nn.Linear(dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(torch.nn.functional.silu(self.linear_1(x)))


class _Level(nn.Module):
    """One resolution of the down or up path: ResNets with temporal convs, optionally spatial + temporal
    transformers after each, then a resampler (``downsamplers.0`` / ``upsamplers.0``) unless it is the last."""

    def __init__(self, channels_in: list[int], channels: int, attention_layers: int, resample: type | None,
                 config: I2VGenXLConfig, kernel: AttentionKernel):
        super().__init__()
        groups, time_dim = config.norm_num_groups, config.time_embed_dim
        self.resnets = nn.ModuleList([ResnetBlock(c, channels, time_dim, groups) for c in channels_in])
        self.temp_convs = nn.ModuleList([TemporalConvStack(channels, groups) for _ in channels_in])
        if attention_layers:
            heads = channels // config.head_dim
            self.attentions = nn.ModuleList([
                SpatialTransformer(channels, config.head_dim, config.cross_attention_dim, groups, kernel)
                for _ in range(attention_layers)])
            self.temp_attentions = nn.ModuleList([
                TemporalTransformer(channels, heads, config.head_dim, groups, kernel) for _ in range(attention_layers)])
        if resample is Downsample:
            self.downsamplers = nn.ModuleList([Downsample(channels)])
        elif resample is Upsample:
            self.upsamplers = nn.ModuleList([Upsample(channels)])

    def layer(self, i: int, x: Tensor, time: Tensor, context: Tensor, frames: int) -> Tensor:
        x = self.temp_convs[i](self.resnets[i](x, time), frames)
        if hasattr(self, "attentions"):
            x = self.temp_attentions[i](self.attentions[i](x, context), frames)
        return x


class I2VGenXLUNet(nn.Module):
    """``forward(x (B, 4, F, h, w), timestep (B,), text (B, 77, D), image_latent (B, 4, h, w),
    image_embedding (B, D), fps (B,)) → (B, 4, F, h, w)``, the model output (v-prediction for the public weights).
    """

    def __init__(self, config: I2VGenXLConfig = I2VGenXLConfig(), kernel: AttentionKernel = sdpa_attention):
        super().__init__()
        self.config = config
        c0, time_dim, ctx, groups = (config.block_out_channels[0], config.time_embed_dim,
                                     config.cross_attention_dim, config.norm_num_groups)
        lat = LATENT_CHANNELS
        self.conv_in = nn.Conv2d(2 * lat, c0, 3, padding=1)
        self.transformer_in = TemporalTransformer(c0, TRANSFORMER_IN_HEADS, config.head_dim, groups, kernel)
        self.image_latents_proj_in = nn.Sequential(
            nn.Conv2d(lat, 4 * lat, 3, padding=1), nn.SiLU(), nn.Conv2d(4 * lat, 4 * lat, 3, padding=1), nn.SiLU(),
            nn.Conv2d(4 * lat, lat, 3, padding=1))
        self.image_latents_temporal_encoder = ImageLatentTemporalEncoder(lat, kernel)
        self.image_latents_context_embedding = nn.Sequential(
            nn.Conv2d(lat, 8 * lat, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(IMAGE_LATENT_POOL),
            nn.Conv2d(8 * lat, 16 * lat, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(16 * lat, ctx, 3, stride=2, padding=1))
        self.time_embedding = _TimeEmbedding(c0, time_dim)
        self.context_embedding = _Embedding(ctx, time_dim, ctx * IMAGE_TOKENS)
        self.fps_embedding = _Embedding(c0, time_dim, time_dim)

        channels, levels, last = config.block_out_channels, config.attention_levels, len(config.block_out_channels) - 1
        layers = config.layers_per_block
        self.down_blocks = nn.ModuleList()
        for i, (c, attention) in enumerate(zip(channels, levels)):
            c_in = channels[max(i - 1, 0)]
            self.down_blocks.append(_Level([c_in] + [c] * (layers - 1), c, layers if attention else 0,
                                           Downsample if i < last else None, config, kernel))
        self.mid_block = _Level([channels[-1]] * 2, channels[-1], 1, None, config, kernel)
        skips = self._skip_channels()
        self.up_blocks = nn.ModuleList()
        for i, (c, attention) in enumerate(zip(reversed(channels), reversed(levels))):
            c_prev = channels[last - i + 1] if i > 0 else channels[-1]
            inputs = [(c_prev if j == 0 else c) + skips.pop() for j in range(layers + 1)]
            self.up_blocks.append(_Level(inputs, c, layers + 1 if attention else 0, Upsample if i < last else None,
                                         config, kernel))
        self.conv_norm_out = nn.GroupNorm(groups, c0, eps=1e-5)
        self.conv_out = nn.Conv2d(c0, lat, 3, padding=1)

    def _skip_channels(self) -> list[int]:
        """Channels of the skip connections in the order the down path stores them."""
        channels, layers = self.config.block_out_channels, self.config.layers_per_block
        skips = [channels[0]]
        for i, c in enumerate(channels):
            skips += [c] * layers + ([c] if i < len(channels) - 1 else [])
        return skips

    def use_attention(self, kernel: AttentionKernel) -> None:
        """Route every attention of the network through ``kernel`` (e.g. the host's optimized attention)."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.kernel = kernel

    def context(self, text: Tensor, image_latent: Tensor, image_embedding: Tensor) -> Tensor:
        """The 145-token context (B, 77 + 64 + 4, D): text, first-frame latent tokens, CLIP image tokens."""
        latent_tokens = self.image_latents_context_embedding(image_latent).flatten(2).transpose(1, 2)
        image_tokens = self.context_embedding(image_embedding).view(-1, IMAGE_TOKENS, self.config.cross_attention_dim)
        return torch.cat([text, latent_tokens, image_tokens], dim=1)

    def image_latent_channels(self, image_latent: Tensor, frames: int) -> Tensor:
        """The 4 channels concatenated to the noisy latent, (B, 4, F, h, w), from [first-frame latent, then
        constant frames (k+1)/(F−1) for k = 0..F−2] through the per-frame convs and the temporal encoder."""
        b, c, h, w = image_latent.shape
        ramp = torch.arange(1, frames, device=image_latent.device, dtype=image_latent.dtype) / max(frames - 1, 1)
        sequence = torch.cat([image_latent[:, None], ramp.view(1, -1, 1, 1, 1).expand(b, -1, c, h, w)], dim=1)
        per_frame = self.image_latents_proj_in(sequence.flatten(0, 1))  # (B·F, 4, h, w)
        tokens = per_frame.view(b, frames, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, frames, c)
        encoded = self.image_latents_temporal_encoder(tokens)
        return encoded.view(b, h, w, frames, c).permute(0, 4, 3, 1, 2)

    def _embeddings(self, timestep: Tensor, fps: Tensor, dtype: torch.dtype) -> Tensor:
        c0 = self.config.block_out_channels[0]
        return (self.time_embedding(sinusoidal_embedding(timestep, c0).to(dtype))
                + self.fps_embedding(sinusoidal_embedding(fps, c0).to(dtype)))

    def forward(self, x: Tensor, timestep: Tensor, text: Tensor, image_latent: Tensor, image_embedding: Tensor,
                fps: Tensor) -> Tensor:
        b, _, frames, h, w = x.shape
        time = self._embeddings(timestep.expand(b), fps.expand(b), x.dtype).repeat_interleave(frames, dim=0)
        context = self.context(text, image_latent, image_embedding).repeat_interleave(frames, dim=0)
        sample = torch.cat([x, self.image_latent_channels(image_latent, frames)], dim=1)
        sample = self.conv_in(sample.transpose(1, 2).flatten(0, 1))  # (B·F, C0, h, w)
        sample = self.transformer_in(sample, frames)
        skips = [sample]
        for level in self.down_blocks:
            for i in range(len(level.resnets)):
                sample = level.layer(i, sample, time, context, frames)
                skips.append(sample)
            if hasattr(level, "downsamplers"):
                sample = level.downsamplers[0](sample)
                skips.append(sample)
        mid = self.mid_block
        sample = mid.temp_convs[0](mid.resnets[0](sample, time), frames)
        sample = mid.temp_attentions[0](mid.attentions[0](sample, context), frames)
        sample = mid.temp_convs[1](mid.resnets[1](sample, time), frames)
        for level in self.up_blocks:
            for i in range(len(level.resnets)):
                sample = level.layer(i, torch.cat([sample, skips.pop()], dim=1), time, context, frames)
            if hasattr(level, "upsamplers"):
                sample = level.upsamplers[0](sample, skips[-1].shape[-2:])
        sample = self.conv_out(torch.nn.functional.silu(self.conv_norm_out(sample)))
        return sample.unflatten(0, (b, frames)).transpose(1, 2)
