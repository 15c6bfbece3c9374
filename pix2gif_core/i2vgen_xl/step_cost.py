"""The cost of one I2VGen-XL UNet step without running it: a trace on PyTorch's ``meta`` device (no weights, no
compute) giving FLOPs and the peak of live activation memory, at any size and dtype.

Attention is traced as a fused kernel (flash / memory-efficient SDPA, or ComfyUI's chunked back-ends) would run
it: its output is allocated, the Lq × Lk score matrix is not, and its FLOPs are counted as 4·B·H·Lq·Lk·d
(QKᵀ and PV). Every other op's FLOPs come from ``torch.utils.flop_counter``. Live memory is the sum of the
storages of tensors the ops created (views and in-place results share storage and add nothing), released when
the last Python reference goes, so it follows the forward pass as eager PyTorch frees it.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from .config import LATENT_CHANNELS, I2VGenXLConfig
from .unet import I2VGenXLUNet

TEXT_TOKENS = 77


@dataclass(frozen=True)
class StepCost:
    flops: int
    attention_flops: int
    peak_activation_bytes: int
    weight_bytes: int

    @property
    def peak_bytes(self) -> int:
        """Weights plus the activation peak: what one step needs on the device."""
        return self.weight_bytes + self.peak_activation_bytes


class _LiveBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(result.alias_info is not None for result in func._schema.returns):
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, Tensor):
                    size = tensor.untyped_storage().nbytes()
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._release, size)
        return out

    def _release(self, size: int) -> None:
        self.live -= size


class _FusedAttentionTrace:
    """An attention kernel for the trace: allocates the output only, counts QKᵀ + PV FLOPs."""

    def __init__(self):
        self.flops = 0

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, heads, queries, dim = q.shape
        self.flops += 4 * batch * heads * queries * k.shape[2] * dim
        return q.new_empty(batch, heads, queries, v.shape[-1])


def trace_step(config: I2VGenXLConfig, videos: int, frames: int, height: int, width: int,
               dtype: torch.dtype = torch.float16) -> StepCost:
    """One UNet call on ``videos`` clips (2 for a CFG batch) of ``frames`` × ``height`` × ``width`` pixels."""
    with torch.device("meta"):
        unet = I2VGenXLUNet(config).to(dtype).eval()
        attention = _FusedAttentionTrace()
        unet.use_attention(attention)
        h, w, dim = height // 8, width // 8, config.cross_attention_dim
        inputs = (torch.empty(videos, LATENT_CHANNELS, frames, h, w, dtype=dtype), torch.zeros(videos),
                  torch.empty(videos, TEXT_TOKENS, dim, dtype=dtype),
                  torch.empty(videos, LATENT_CHANNELS, h, w, dtype=dtype), torch.empty(videos, dim, dtype=dtype),
                  torch.full((videos,), 16.0))
    live = _LiveBytes()
    with torch.no_grad(), FlopCounterMode(display=False) as flops, live:
        unet(*inputs)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    return StepCost(flops.get_total_flops() + attention.flops, attention.flops, live.peak, weights)
