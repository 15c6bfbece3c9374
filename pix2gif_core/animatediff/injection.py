"""Layers that run inside a 2-D SD UNet to make it a video UNet: injected motion modules and cross-frame GroupNorm.

The host calls these layers with the feature map only, ``(B·F, C, H, W)``, where the batch packs B videos
(e.g. the cond and uncond halves of a CFG batch) of F frames each. The frame count, the per-call
temporal-attention variants and an optional per-position motion scale come from a :class:`FrameContext` shared
by all layers of one patched model and filled before every UNet call by the host glue.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..attention import AttentionKernel, sdpa_attention
from ..errors import Pix2GifInputError
from .motion_module import MotionModule, TemporalAttentionVariant, TemporalSelfAttention


class KeyScales(Protocol):
    """A motion scale per spatial position of a feature map of ``feature_hw`` = (h, w): ``(h·w,)`` row-major, in
    ``like``'s dtype and device; the temporal attention's keys at position p are multiplied by it."""

    def __call__(self, feature_hw: tuple[int, int], like: torch.Tensor) -> torch.Tensor: ...


@dataclass
class FrameContext:
    """What the injected layers need per UNet call that the host does not pass to them.

    ``video_length`` is F (frames per video in the current batch); ``variants`` maps a motion-module name
    (e.g. ``"down_blocks.0.motion_modules.1"``) to the temporal-attention variant to use in place of global
    attention for this call; ``key_scales`` (None = 1 everywhere) the per-position motion scale of this call.
    """

    video_length: int = 0
    variants: dict[str, TemporalAttentionVariant] = field(default_factory=dict)
    key_scales: KeyScales | None = None

    def frames_in(self, batch: int, layer: str) -> int:
        """F for a batch of ``batch`` = B·F feature maps; raises if the glue did not set it consistently."""
        if self.video_length < 1 or batch % self.video_length:
            raise Pix2GifInputError(
                f"{layer}: a batch of {batch} feature maps cannot be split into videos of {self.video_length} "
                "frames; the motion model only works inside a UNet call made by a sampler on a video latent")
        return self.video_length


def run_with_weights_of(module: nn.Module, x: torch.Tensor, *args):
    """``module(x, *args)`` computed with ``module``'s weights on ``x``'s device and in its dtype.

    The host's model management places the weights (they normally already are where ``x`` is); weights it left
    elsewhere – a partial load under low VRAM, a dtype other than the UNet's – are cast for this call only, so
    the module itself is never moved behind the host's back.
    """
    tensors = dict(module.named_parameters())
    if all(t.device == x.device and t.dtype == x.dtype for t in tensors.values()):
        return module(x, *args)
    tensors.update(module.named_buffers())
    cast = {name: t.to(device=x.device, dtype=x.dtype if t.is_floating_point() else t.dtype)
            for name, t in tensors.items()}
    return torch.func.functional_call(module, cast, (x, *args))


class InjectedMotionModule(nn.Module):
    """A motion module placed in a UNet block: ``(B·F, C, H, W) -> (B·F, C, H, W)``.

    ``key_scale`` is this placement's motion scale and ``kernel`` the attention kernel its temporal attentions
    call (the host's); the context's ``key_scales`` at this layer's feature size become their per-sequence
    ``key_scale_map`` (repeated for every video of the batch). The wrapped module may be shared with other
    patched models, so all three are set on its attentions at every call.
    """

    def __init__(self, name: str, module: MotionModule, context: FrameContext, key_scale: float = 1.0,
                 kernel: AttentionKernel = sdpa_attention):
        super().__init__()
        self.name = name
        self.module = module
        self.context = context
        self.key_scale = float(key_scale)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.context.frames_in(x.shape[0], self.name)
        sequence_scales = None
        if self.context.key_scales is not None:
            per_position = self.context.key_scales((x.shape[-2], x.shape[-1]), x)
            sequence_scales = per_position.repeat(x.shape[0] // frames)[:, None, None]
        for attention in self.module.modules():
            if isinstance(attention, TemporalSelfAttention):
                attention.key_scale = self.key_scale
                attention.key_scale_map = sequence_scales
                attention.kernel = self.kernel
        return run_with_weights_of(self.module, x, frames, self.context.variants.get(self.name))


class CrossFrameGroupNorm(nn.Module):
    """GroupNorm whose statistics span all frames of a video, as AnimateDiff v1 was trained (methods.md §1.2).

    Wraps the UNet's own per-image GroupNorm and calls it on the frames stacked as one ``(B, C, F, H, W)``
    volume (so the host's weight casting and offloading of that norm keep working); ``(B·F, C, H, W)`` in and
    out.
    """

    def __init__(self, norm: nn.GroupNorm, context: FrameContext):
        super().__init__()
        self.norm = norm
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.context.frames_in(x.shape[0], "cross-frame GroupNorm")
        videos = x.shape[0] // frames
        stacked = x.reshape(videos, frames, *x.shape[1:]).transpose(1, 2)  # (B, C, F, H, W)
        return self.norm(stacked).transpose(1, 2).reshape(x.shape)
