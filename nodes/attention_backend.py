"""The host's attention as the engine's :class:`~..pix2gif_core.attention.AttentionKernel`.

ComfyUI picks its attention at start-up (``--use-pytorch-cross-attention``, ``--use-xformers``, flash, sage,
split, sub-quadratic) and exposes it as ``comfy.ldm.modules.attention.optimized_attention`` (and a masked
variant); the model's ``attn_precision`` (float32 upcast for the SD2 family) goes with each call. The kernel
returned here looks the host function up at call time, so it follows whatever the host chose.
"""
from __future__ import annotations

import inspect

import torch
from torch import Tensor

from ..pix2gif_core.attention import AttentionKernel


def host_attention(attn_precision: torch.dtype | None = None) -> AttentionKernel:
    """An attention kernel calling ComfyUI's ``optimized_attention`` (``optimized_attention_masked`` when a
    mask is given), in the engine's ``(B, heads, L, d)`` layout; ``attn_precision`` as the model declares it."""
    from comfy.ldm.modules import attention as host

    takes_head_layout = "skip_reshape" in inspect.signature(host.optimized_attention).parameters
    extra = {"attn_precision": attn_precision} if takes_head_layout else {}

    def kernel(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, heads, length, dim = q.shape
        attend = host.optimized_attention if mask is None else host.optimized_attention_masked
        if takes_head_layout:
            out = attend(q, k, v, heads, mask=mask, skip_reshape=True, **extra)
        else:  # ComfyUI before v0.3 takes and returns (B, L, heads·d)
            def merged(t: Tensor) -> Tensor:
                return t.transpose(1, 2).reshape(batch, t.shape[2], heads * dim)
            out = attend(merged(q), merged(k), merged(v), heads, mask=mask)
        return out.view(batch, length, heads, v.shape[-1]).transpose(1, 2)

    return kernel
