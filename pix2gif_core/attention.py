"""The attention kernel every attention layer of the engine calls, so a host can supply its own.

An :data:`AttentionKernel` computes ``softmax(q·kᵀ/√d + mask)·v`` for ``q (B, heads, Lq, d)`` and
``k, v (B, heads, Lk, d)``, with an optional additive float ``mask`` broadcastable to ``(B, heads, Lq, Lk)``,
and returns ``(B, heads, Lq, d)``. The scale is always ``1/√d``: a layer that needs another scale (the motion
module's key scale) multiplies ``k`` before the call. The engine's default is :func:`sdpa_attention`; the
ComfyUI nodes pass the host's ``optimized_attention`` (its xformers / flash / sage / split back-ends and
``attn_precision``) through the same signature.
"""

from __future__ import annotations

from typing import Protocol

import torch.nn.functional as F
from torch import Tensor

# CUDA SDPA kernels fail ("invalid configuration argument") when batch·heads reaches 65,536 grid entries;
# ComfyUI splits SDPA calls into batches of 2**15 on NVIDIA, and so does the default kernel (performance.md §3).
CUDA_SDPA_MAX_BATCH_ENTRIES = 2**15


class AttentionKernel(Protocol):
    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor: ...


def sdpa_in_batch_slices(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, max_batch_entries: int) -> Tensor:
    """PyTorch's fused attention over slices of the batch B holding at most ``max_batch_entries`` B·heads
    entries each (one call when the whole batch fits); ``mask`` is sliced along B when it has B rows."""
    rows, heads = q.shape[:2]
    if rows * heads <= max_batch_entries:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    step = max(1, max_batch_entries // heads)
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for start in range(0, rows, step):
        part = slice(start, start + step)
        part_mask = mask[part] if mask is not None and mask.dim() == 4 and mask.shape[0] == rows else mask
        out[part] = F.scaled_dot_product_attention(q[part], k[part], v[part], attn_mask=part_mask)
    return out


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """PyTorch's fused attention; on CUDA the batch is processed in slices within the grid limit."""
    if not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return sdpa_in_batch_slices(q, k, v, mask, CUDA_SDPA_MAX_BATCH_ENTRIES)
