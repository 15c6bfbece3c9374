"""AnimateDiff motion module (temporal transformer), parameter names equal to the official checkpoint keys.

A motion module mixes information across the frames of each video at every spatial position: it reads a
frame batch ``(B·F, C, H, W)``, attends over the ``F`` frames of each video at each of the ``H·W`` positions,
and adds the result to its input (``proj_out`` is zero-initialised in training, so an untrained module is the
identity). See ``shared/design/methods.md`` §1 for the architecture, versions and key layout.

Temporal attention is pluggable: :class:`TemporalSelfAttention` computes the attended values with a
:class:`TemporalAttentionVariant` callable (default :func:`global_temporal_attention`) and applies ``to_out``.
Other methods (AnimateZero window attention, Motion-Inversion embeddings) pass their own callable and reuse the
attention's building blocks (:meth:`TemporalSelfAttention.attend`, ``heads_split``/``heads_merge``,
``position_encoding``).

Motion scale ("key scale", AnimateDiff-Evolved's motion scale) is the attribute
:attr:`TemporalSelfAttention.key_scale`: keys are multiplied by it, which equals multiplying the softmax
scale. Set it for a whole checkpoint with :meth:`MotionModuleSet.set_key_scale`; it is module state, so set it
before each run. :attr:`TemporalSelfAttention.key_scale_map` is a motion scale per token sequence (per spatial
position, AnimateDiff-Evolved's motion-scale mask), applied on top of ``key_scale``; None = 1 everywhere.

The attention itself is :attr:`TemporalSelfAttention.kernel`, an :class:`~..attention.AttentionKernel`
(default :func:`~..attention.sdpa_attention`; a host sets its own, e.g. ComfyUI's ``optimized_attention``).
:meth:`TemporalSelfAttention.attend` scales the keys and calls it, so every variant that attends through
``attend`` honours both the key scale and the host's kernel.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..attention import AttentionKernel, sdpa_attention
from ..errors import Pix2GifInputError

ATTENTION_HEADS = 8
MOTION_MODULE_VERSIONS = ("v1", "v2", "v3")
DEFAULT_PE_LENGTH = {"v1": 24, "v2": 32, "v3": 32}
LONGEST_TRAINED_PE_LENGTH = 32


def sinusoidal_position_encoding(
    length: int, channels: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """Sinusoidal table ``(length, channels)``: ``pe[p, 2i] = sin(p·ω_i)``, ``pe[p, 2i+1] = cos(p·ω_i)`` with
    ``ω_i = exp(−2i·ln(10000)/channels)``. Computed in float64, returned in ``dtype``."""
    positions = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    frequencies = torch.exp(
        torch.arange(0, channels, 2, dtype=torch.float64, device=device) * (-math.log(10000.0) / channels)
    )
    angles = positions * frequencies
    table = torch.empty(length, channels, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : channels // 2])
    return table.to(dtype)


def check_version(version: str) -> str:
    """``version`` if it is one of :data:`MOTION_MODULE_VERSIONS`, else :class:`Pix2GifInputError`."""
    if version not in MOTION_MODULE_VERSIONS:
        raise Pix2GifInputError(
            f"motion module version '{version}' is unknown; choose one of {', '.join(MOTION_MODULE_VERSIONS)}."
        )
    return version


class TemporalAttentionVariant(Protocol):
    """How one temporal attention turns its layer-normed tokens into attended values.

    ``hidden`` is ``(N, F, C)`` (N = batch·positions, F = frames), ``pe`` the ``(F, C)`` position encoding in
    ``hidden``'s dtype/device. Returns ``(N, F, C)`` values BEFORE ``attn.to_out``. Honour ``attn.key_scale``,
    ``attn.key_scale_map`` and the host's kernel by attending through ``attn.attend`` (or score with
    ``attn.softmax_scale`` and multiply the scores of sequence ``n`` by ``attn.key_scale_map[n]``).
    """

    def __call__(self, attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor: ...


def global_temporal_attention(attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
    """AnimateDiff's attention: every frame attends to all frames; PE is added before the Q/K/V projections."""
    tokens = hidden + pe
    return attn.attend(attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens))


class TemporalSelfAttention(nn.Module):
    """Multi-head self-attention over frames (official ``VersatileAttention``, attention_mode "Temporal").

    Keys: ``to_q/to_k/to_v.weight`` (C, C), ``to_out.0.{weight,bias}``. The sinusoidal table of
    ``pe_length`` rows is a non-persistent buffer (not in the state dict). ``kernel`` is the attention kernel
    :meth:`attend` calls (module state like ``key_scale``). ``key_scale_map`` ``(N, 1, 1)`` or None: the keys of
    token sequence ``n`` (``N = videos·H·W``, video-major, as :class:`TemporalTransformer` orders them) are also
    multiplied by ``key_scale_map[n]`` (module state, set per call).
    """

    def __init__(self, channels: int, pe_length: int, heads: int = ATTENTION_HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.pe_length = pe_length
        self.key_scale = 1.0
        self.key_scale_map: Tensor | None = None
        self.kernel: AttentionKernel = sdpa_attention
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Sequential(nn.Linear(channels, channels), nn.Dropout(0.0))
        self.reset_position_encoding()

    def reset_position_encoding(self, dtype: torch.dtype = torch.float32) -> None:
        """(Re)build the PE buffer in ``dtype`` on the weights' device, e.g. after loading weights into a
        meta-built module. Computed on the CPU, then moved: sin/cos on the meta device would pull in torch's
        slow Python meta kernels. float32 by default, as the official module (and MPS has no float64)."""
        table = sinusoidal_position_encoding(self.pe_length, self.to_q.in_features, dtype=dtype, device="cpu")
        self.register_buffer("pe", table.to(self.to_q.weight.device), persistent=False)

    @property
    def softmax_scale(self) -> float:
        """Factor applied to q·kᵀ: ``key_scale / sqrt(head_dim)``."""
        return self.key_scale / math.sqrt(self.to_q.out_features // self.heads)

    def heads_split(self, tokens: Tensor) -> Tensor:
        """``(N, F, C)`` → ``(N, heads, F, C/heads)``."""
        return rearrange(tokens, "n f (h d) -> n h f d", h=self.heads)

    def heads_merge(self, per_head: Tensor) -> Tensor:
        """``(N, heads, F, d)`` → ``(N, F, heads·d)``."""
        return rearrange(per_head, "n h f d -> n f (h d)")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """Multi-head attention of projected ``q (N, Fq, C)`` over ``k, v (N, Fk, C)`` → ``(N, Fq, C)``.

        Calls :attr:`kernel` on the heads, keys × :attr:`key_scale` × :attr:`key_scale_map` (the kernel's own
        scale is 1/√d); ``mask`` is an additive float mask broadcasting to ``(N, heads, Fq, Fk)``.
        """
        keys = k if self.key_scale == 1.0 else k * self.key_scale
        sequence_scales = self.sequence_key_scales(k.shape[0])
        if sequence_scales is not None:
            keys = keys * sequence_scales
        attended = self.kernel(self.heads_split(q), self.heads_split(keys), self.heads_split(v), mask)
        return self.heads_merge(attended)

    def sequence_key_scales(self, sequences: int) -> Tensor | None:
        """:attr:`key_scale_map` ``(N, 1, 1)`` checked against ``sequences`` = N token sequences; None if unset."""
        scales = self.key_scale_map
        if scales is not None and scales.shape[0] != sequences:
            raise ValueError(f"key_scale_map holds {scales.shape[0]} sequence scales for {sequences} token sequences")
        return scales

    def position_encoding(self, frames: int, like: Tensor) -> Tensor:
        """First ``frames`` rows of the PE table ``(frames, C)`` in ``like``'s dtype and device."""
        if frames > self.pe_length:
            hint = (
                f" or a v2/v3 motion module, which handles up to {LONGEST_TRAINED_PE_LENGTH}"
                if self.pe_length < LONGEST_TRAINED_PE_LENGTH
                else ""
            )
            raise Pix2GifInputError(
                f"video length {frames} frames is longer than this motion module's position encoding "
                f"({self.pe_length} frames); use at most {self.pe_length} frames per motion-module pass{hint}."
            )
        return self.pe[:frames].to(dtype=like.dtype, device=like.device)

    def forward(self, hidden: Tensor, variant: TemporalAttentionVariant | None = None) -> Tensor:
        """Layer-normed tokens ``(N, F, C)`` → attention output ``(N, F, C)`` (before the residual add)."""
        pe = self.position_encoding(hidden.shape[1], hidden)
        return self.to_out((variant or global_temporal_attention)(self, hidden, pe))


class GEGLU(nn.Module):
    """``proj`` Linear(C, 2·inner), split into value and gate halves → ``value · GELU(gate)``."""

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(channels, 2 * inner)

    def forward(self, tokens: Tensor) -> Tensor:
        value, gate = self.proj(tokens).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with keys ``net.0.proj`` (C→8C) and ``net.2`` (4C→C); ``net.1`` is dropout 0."""

    def __init__(self, channels: int, multiplier: int = 4) -> None:
        super().__init__()
        inner = channels * multiplier
        self.net = nn.Sequential(GEGLU(channels, inner), nn.Dropout(0.0), nn.Linear(inner, channels))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens)


class TemporalTransformerBlock(nn.Module):
    """Two pre-norm temporal self-attentions and a pre-norm GEGLU feed-forward, each residual."""

    def __init__(self, channels: int, pe_length: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalSelfAttention(channels, pe_length) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(2))
        self.ff = FeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(self, hidden: Tensor, variant: TemporalAttentionVariant | None = None) -> Tensor:
        """``(N, F, C)`` → ``(N, F, C)``."""
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden = attention(norm(hidden), variant) + hidden
        return self.ff(self.ff_norm(hidden)) + hidden


class TemporalTransformer(nn.Module):
    """GroupNorm → proj_in → transformer blocks over frames → proj_out, added to the input."""

    def __init__(self, channels: int, pe_length: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, pe_length)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, video_length: int, variant: TemporalAttentionVariant | None = None) -> Tensor:
        """Frame batch ``(B·F, C, H, W)`` with ``F = video_length`` consecutive frames per video → same shape."""
        if x.dim() != 4 or x.shape[1] != self.proj_in.in_features:
            raise Pix2GifInputError(
                f"motion module input has shape {tuple(x.shape)}; it expects (frames, {self.proj_in.in_features}, "
                "height, width). Is the motion module meant for this base model (SD1.5)?"
            )
        batch_frames, _, height, width = x.shape
        if video_length < 1 or batch_frames % video_length:
            raise Pix2GifInputError(
                f"frame batch of {batch_frames} latents is not a whole number of videos of video_length="
                f"{video_length} frames; make the batch (frames × videos, CFG included) a multiple of video_length."
            )
        tokens = rearrange(self.norm(x), "(b f) c h w -> (b h w) f c", f=video_length)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, variant)
        tokens = self.proj_out(tokens)
        return rearrange(tokens, "(b h w) f c -> (b f) c h w", h=height, w=width) + x


class MotionModule(nn.Module):
    """One AnimateDiff motion module (official ``VanillaTemporalModule``); keys ``temporal_transformer.*``."""

    def __init__(self, channels: int, pe_length: int) -> None:
        super().__init__()
        self.channels = channels
        self.temporal_transformer = TemporalTransformer(channels, pe_length)

    def forward(self, x: Tensor, video_length: int, variant: TemporalAttentionVariant | None = None) -> Tensor:
        """``(B·F, C, H, W)`` → ``(B·F, C, H, W)``; see :meth:`TemporalTransformer.forward`."""
        return self.temporal_transformer(x, video_length, variant)


@dataclass(frozen=True)
class MotionModuleConfig:
    """Layout of one motion-module checkpoint (channels per UNet block, modules per block, PE length)."""

    version: str
    down_channels: tuple[int, ...]
    modules_per_down_block: int
    up_channels: tuple[int, ...]
    modules_per_up_block: int
    mid_channels: int | None
    pe_length: int

    def __post_init__(self) -> None:
        check_version(self.version)


class _BlockMotionModules(nn.Module):
    """The motion modules of one UNet block (keys ``motion_modules.<j>.*``)."""

    def __init__(self, channels: int, count: int, pe_length: int) -> None:
        super().__init__()
        self.motion_modules = nn.ModuleList(MotionModule(channels, pe_length) for _ in range(count))


class MotionModuleSet(nn.Module):
    """All motion modules of one checkpoint; ``state_dict()`` keys equal the official file's keys.

    Children: ``down_blocks[i].motion_modules[j]``, optional ``mid_block.motion_modules[0]`` (v2),
    ``up_blocks[i].motion_modules[j]``. The set has no forward: the host inserts each module into the UNet
    at :func:`unet_position` of its name.
    """

    def __init__(self, config: MotionModuleConfig) -> None:
        super().__init__()
        self.config = config
        self.down_blocks = nn.ModuleList(
            _BlockMotionModules(channels, config.modules_per_down_block, config.pe_length)
            for channels in config.down_channels
        )
        if config.mid_channels is not None:
            self.mid_block = _BlockMotionModules(config.mid_channels, 1, config.pe_length)
        self.up_blocks = nn.ModuleList(
            _BlockMotionModules(channels, config.modules_per_up_block, config.pe_length)
            for channels in config.up_channels
        )

    def named_motion_modules(self) -> list[tuple[str, MotionModule]]:
        """``[("down_blocks.0.motion_modules.0", module), …]`` in UNet order: down, mid, up."""
        return [(name, module) for name, module in self.named_modules() if isinstance(module, MotionModule)]

    def channels(self, name: str) -> int:
        """Channel count C of the module called ``name`` (as in :meth:`named_motion_modules`)."""
        return dict(self.named_motion_modules())[name].channels

    def set_key_scale(self, scale: float) -> None:
        """Motion scale for every temporal attention: keys × ``scale`` (1.0 = as trained, 0 = frames averaged)."""
        if not math.isfinite(scale) or scale < 0:
            raise Pix2GifInputError(f"motion scale {scale} must be a finite number ≥ 0 (1.0 = as trained).")
        for module in self.modules():
            if isinstance(module, TemporalSelfAttention):
                module.key_scale = float(scale)

    def reset_position_encodings(self) -> None:
        """Rebuild every attention's PE buffer on its weights' device (after ``load_state_dict(assign=True)``)."""
        for module in self.modules():
            if isinstance(module, TemporalSelfAttention):
                module.reset_position_encoding()


_MODULE_NAME = re.compile(r"^(?:(down|up)_blocks\.(\d+)|mid_block)\.motion_modules\.(\d+)$")


def unet_position(name: str) -> tuple[str, int]:
    """Where the motion module ``name`` goes in ComfyUI's LDM SD1.5 UNet (methods.md §1.3).

    ``down_blocks.i.motion_modules.j`` → ``("input", 3i + j + 1)``, ``up_blocks.i.motion_modules.j`` →
    ``("output", 3i + j)``, ``mid_block.motion_modules.0`` → ``("middle", 0)``.
    """
    match = _MODULE_NAME.match(name)
    if match is None:
        raise ValueError(f"'{name}' is not a motion-module name like 'down_blocks.0.motion_modules.1'")
    direction, block, index = match.group(1), match.group(2), int(match.group(3))
    if direction is None:
        return ("middle", index)
    if direction == "down":
        return ("input", 3 * int(block) + index + 1)
    return ("output", 3 * int(block) + index)
