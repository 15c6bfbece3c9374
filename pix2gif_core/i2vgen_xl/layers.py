"""The building blocks of the I2VGen-XL UNet, with diffusers' parameter names (``to_q``, ``ff.net.0.proj``,
``conv1.2`` …) so a diffusers state dict loads as it is.

Shapes: frames are folded into the batch, ``(B·F, C, H, W)``, as in both reference implementations; the temporal
layers unfold them with ``frames``. Every attention goes through an :data:`~..attention.AttentionKernel`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import AttentionKernel, sdpa_attention

RESNET_EPS = 1e-5
TRANSFORMER_NORM_EPS = 1e-6


def sinusoidal_embedding(values: Tensor, dim: int) -> Tensor:
    """``[cos(v·f_i), sin(v·f_i)]``, ``f_i = 10000^(−i/(dim/2))``: (N,) → (N, dim) float32 (timesteps, fps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    angles = values.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class Attention(nn.Module):
    """Multi-head attention, self (``context`` None) or cross; ``x (N, Lq, dim)``, ``context (N, Lk, context_dim)``."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 kernel: AttentionKernel = sdpa_attention):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.kernel = kernel
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        source = x if context is None else context

        def split(t: Tensor) -> Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = self.kernel(split(self.to_q(x)), split(self.to_k(source)), split(self.to_v(source)))
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class _FeedForwardIn(nn.Module):
    """The first projection of :class:`FeedForward`: GEGLU (``x·gelu(gate)``) when gated, else GELU."""

    def __init__(self, dim: int, inner: int, gated: bool):
        super().__init__()
        self.gated = gated
        self.proj = nn.Linear(dim, inner * 2 if gated else inner)

    def forward(self, x: Tensor) -> Tensor:
        if not self.gated:
            return F.gelu(self.proj(x))
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net.0`` projection in, ``net.1`` the (inference-time no-op) dropout slot, ``net.2`` projection out."""

    def __init__(self, dim: int, inner: int, gated: bool = True):
        super().__init__()
        self.net = nn.Sequential(_FeedForwardIn(dim, inner, gated), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, second attention (cross over ``context`` when ``context_dim``, else self), GEGLU."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None, kernel: AttentionKernel):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, kernel=kernel)
        self.attn2 = Attention(dim, heads, head_dim, context_dim, kernel=kernel)
        self.ff = FeedForward(dim, 4 * dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per frame: GroupNorm, linear projection, one block cross-attending to the context ``(B·F, L, D)``."""

    def __init__(self, channels: int, head_dim: int, context_dim: int, groups: int, kernel: AttentionKernel):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, channels // head_dim, head_dim, context_dim, kernel)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        tokens = self.proj_out(self.transformer_blocks[0](tokens, context))
        return tokens.transpose(1, 2).reshape(n, c, h, w) + x


class TemporalTransformer(nn.Module):
    """Per pixel over the ``frames`` axis: GroupNorm over (C, F, H, W) per video, projection, one block of two
    self-attentions, no positional encoding."""

    def __init__(self, channels: int, heads: int, head_dim: int, groups: int, kernel: AttentionKernel):
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, head_dim, None, kernel)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bf, c, h, w = x.shape
        video = x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)  # (B, C, F, H, W)
        tokens = self.norm(video).permute(0, 3, 4, 2, 1).reshape(-1, frames, c)  # (B·H·W, F, C)
        tokens = self.proj_out(self.transformer_blocks[0](self.proj_in(tokens)))
        out = tokens.reshape(bf // frames, h, w, frames, c).permute(0, 3, 4, 1, 2).reshape(bf, c, h, w)
        return out + x


def _temporal_conv(channels: int, groups: int, dropout_slot: bool) -> nn.Sequential:
    """GroupNorm, SiLU, [dropout slot,] Conv3d over (3 frames, 1, 1)."""
    layers: list[nn.Module] = [nn.GroupNorm(groups, channels), nn.SiLU()]
    if dropout_slot:
        layers.append(nn.Identity())
    layers.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
    return nn.Sequential(*layers)


class TemporalConvStack(nn.Module):
    """Four temporal convolutions with one residual around them, on ``(B·F, C, H, W)``."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv1 = _temporal_conv(channels, groups, dropout_slot=False)
        self.conv2 = _temporal_conv(channels, groups, dropout_slot=True)
        self.conv3 = _temporal_conv(channels, groups, dropout_slot=True)
        self.conv4 = _temporal_conv(channels, groups, dropout_slot=True)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bf, c, h, w = x.shape
        video = x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)
        out = self.conv4(self.conv3(self.conv2(self.conv1(video)))) + video
        return out.transpose(1, 2).reshape(bf, c, h, w)


class ResnetBlock(nn.Module):
    """GroupNorm–SiLU–conv, plus the projected time embedding ``(B·F, T)``, GroupNorm–SiLU–conv, shortcut."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=RESNET_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=RESNET_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time_emb_proj(F.silu(time))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv_shortcut is None else self.conv_shortcut(x))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour to ``size`` (the skip's H, W; ×2 when even), then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class ImageLatentTemporalEncoder(nn.Module):
    """The concat branch's per-pixel transformer over frames, ``(N, F, C)``: pre-LayerNorm self-attention
    (2 heads of C), residual; un-normalised GELU feed-forward C → 4C → C, residual; no positional encoding."""

    def __init__(self, channels: int, kernel: AttentionKernel):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = Attention(channels, 2, channels, kernel=kernel)
        self.ff = FeedForward(channels, 4 * channels, gated=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        return self.ff(x) + x
