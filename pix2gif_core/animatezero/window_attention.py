"""AnimateZero's positional-corrected causal window attention for AnimateDiff motion modules (methods.md §3.3).

Frame ``i`` (0-based) attends to a window of ``W`` slots that always starts with the first frame: slot ``j``
holds frame ``src(i, 0) = 0`` and ``src(i, j) = max(0, i − W + 1 + j)`` for ``j ≥ 1`` – while ``i < W − 1``
that is ``W − 1 − i`` copies of frame 0 followed by frames ``0..i`` (the paper's padded causal window), later
frame 0 followed by the ``W − 1`` frames up to ``i`` – and carries position encoding ``p_j``; the query carries
``p_{W−1}``, so the current frame always sits at the last position of a full window. With ``W`` = the video
length every frame sees frame 0 and all frames before it.

AnimateDiff adds the PE before the bias-free Q/K/V projections, so with ``Kx = to_k(x)``, ``Kp = to_k(pe)`` (and
``Vx``, ``Vp`` alike) ``K[i, j] = Kx[src(i, j)] + Kp[j]`` and ``V[i, j] = Vx[src(i, j)] + Vp[j]``. The window is
never materialised (``W`` copies of the keys and values per query frame); instead ONE call of the attention
kernel over the ``F`` frames computes it:

- a frame ``m ≥ 1`` sits in exactly one slot of row ``i``, so its slot term ``q_i·Kp[slot]`` is a score bias
  ``B[i, m]``; frame 0's copies merge into one key with bias ``logsumexp_j q_i·Kp[j]`` over its slots; frames
  outside the window get a large negative bias. The bias rides in ``F`` extra head dimensions: the query gets
  ``B[i, :]``, the key of frame ``m`` the unit vector ``e_m`` (no mask, so every fused kernel applies);
- the values get the same ``F`` unit vectors, so the kernel also returns the frame probabilities ``P (F × F)``;
  they give the slot probabilities (frame 0's mass split over its copies in proportion to ``exp(q_i·Kp[j])``)
  and ``P_slots·Vp`` is one small GEMM per head.

The kernel is an :data:`~pix2gif_core.attention.AttentionKernel` (default SDPA; the nodes pass the host's).
Sequences are processed in chunks of about ``chunk_bytes`` of working memory, projections included, so peak
memory stays bounded and on CPU the working set stays in cache. Costs: tests/benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from ..attention import AttentionKernel, sdpa_attention
from ..errors import Pix2GifInputError

if TYPE_CHECKING:
    from ..animatediff.motion_module import TemporalSelfAttention

CPU_CHUNK_BYTES = 16 * 2**20
ACCELERATOR_CHUNK_BYTES = 256 * 2**20
#: query entry (in the extra head dimensions) for a frame outside the window: a logit of ``−1e4/√d'``, whose
#: exponential is 0 in every dtype and which half precision still represents
OUTSIDE_WINDOW_QUERY = -1e4


def resolve_window_length(window_length: int | None, frames: int) -> int:
    """Window length for a video of ``frames`` frames: ``window_length``, or ``frames`` when it is None."""
    if window_length is None:
        return frames
    if window_length > frames:
        raise Pix2GifInputError(
            f"window_length {window_length} is longer than the video ({frames} frames); use at most {frames} "
            "or leave it empty (= the video length)."
        )
    return window_length


class WindowLayout(NamedTuple):
    """Index tables of the window for ``F`` frames and ``W`` slots (see the module docstring).

    ``source`` ``(F, W)`` long: frame in slot j of row i; ``first_frame_slot`` ``(F, W)`` bool: the slot holds
    frame 0; ``bias_column`` ``(F, F)`` long: the slot of frame m in row i (column ``W`` = frame 0's merged
    copies); ``outside`` ``(F, F)`` bool: frame m is not in row i's window.
    """

    source: Tensor
    first_frame_slot: Tensor
    bias_column: Tensor
    outside: Tensor


@lru_cache(maxsize=64)
def window_layout(frames: int, window: int, device: torch.device) -> WindowLayout:
    """The :class:`WindowLayout` of ``frames`` frames and ``window`` slots on ``device``."""
    rows = torch.arange(frames)[:, None]
    slots = torch.arange(window)[None]
    source = (rows - window + 1 + slots).clamp(min=0)
    source[:, 0] = 0
    columns = torch.arange(frames)[None]
    slot_of_frame = columns - rows + window - 1
    outside = (columns > rows) | (slot_of_frame < 1)
    bias_column = torch.where(outside, 0, slot_of_frame)
    bias_column[:, 0] = window
    outside[:, 0] = False
    return WindowLayout(*(t.to(device) for t in (source, source == 0, bias_column, outside)))


def _attend_chunk(q: Tensor, k: Tensor, v: Tensor, k_pos: Tensor, v_pos: Tensor, heads: int, scale: float,
                  kernel: AttentionKernel, out: Tensor) -> None:
    """Window attention of one chunk of sequences, written into ``out``.

    ``q`` (query PE included), ``k``, ``v`` (no PE) and ``out``: ``(n, F, C)``; ``k_pos`` ``(h, d, W)`` (already
    multiplied by ``scale``) and ``v_pos`` ``(h, W, d)``: projected PE of the window slots; ``scale`` multiplies
    q·kᵀ. Autograd-safe: no in-place writes.
    """
    n, f, channels = q.shape
    d, w = channels // heads, k_pos.shape[-1]
    layout = window_layout(f, w, q.device)
    q_heads, k_heads, v_heads = (t.view(n, f, heads, d).transpose(1, 2) for t in (q, k, v))  # (n, h, F, d)
    slot_logits = torch.matmul(q_heads, k_pos)  # (n, h, F, W)
    copy_logits = slot_logits.masked_fill(~layout.first_frame_slot, -math.inf)
    first_frame_logit = copy_logits.logsumexp(-1, keepdim=True)  # frame 0's copies merged, (n, h, F, 1)
    root = math.sqrt(d + f)  # the kernel divides by √d' of the widened heads
    bias = torch.cat([slot_logits, first_frame_logit], -1).gather(-1, layout.bias_column.expand(n, heads, f, f))
    bias = (bias * root).masked_fill(layout.outside, OUTSIDE_WINDOW_QUERY)
    units = torch.eye(f, dtype=q.dtype, device=q.device).expand(n, heads, f, f)
    attended = kernel(torch.cat([q_heads * (scale * root), bias], -1), torch.cat([k_heads, units], -1),
                      torch.cat([v_heads, units], -1))
    frame_probabilities = attended[..., d:]
    copy_share = torch.where(layout.first_frame_slot, (copy_logits - first_frame_logit).exp(), 1.0)
    slot_probabilities = frame_probabilities.gather(-1, layout.source.expand(n, heads, f, w)) * copy_share
    result = attended[..., :d] + torch.matmul(slot_probabilities, v_pos)
    out.view(n, f, heads, d).copy_(result.transpose(1, 2))


def _chunks(sequences: int, frames: int, window: int, channels: int, heads: int, like: Tensor,
            chunk_bytes: int | None) -> Iterator[slice]:
    """Row ranges covering ``sequences``, each needing about ``chunk_bytes`` of working memory."""
    if chunk_bytes is None:
        chunk_bytes = CPU_CHUNK_BYTES if like.device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    bytes_per_sequence = like.element_size() * frames * (12 * channels + heads * (11 * frames + 4 * window))
    per_chunk = max(1, chunk_bytes // bytes_per_sequence)
    for start in range(0, sequences, per_chunk):
        yield slice(start, min(start + per_chunk, sequences))


def _split_position_heads(k_pos: Tensor, v_pos: Tensor, heads: int, scale: float) -> tuple[Tensor, Tensor]:
    """Projected window PE ``(W, C)`` → keys ``(h, d, W)`` times ``scale`` and values ``(h, W, d)``."""
    window, channels = k_pos.shape
    k_heads = k_pos.reshape(window, heads, channels // heads).permute(1, 2, 0) * scale
    v_heads = v_pos.reshape(window, heads, channels // heads).transpose(0, 1).contiguous()
    return k_heads, v_heads


def attend_window(q: Tensor, k: Tensor, v: Tensor, k_pos: Tensor, v_pos: Tensor, *, heads: int, scale: float,
                  kernel: AttentionKernel = sdpa_attention, chunk_bytes: int | None = None) -> Tensor:
    """Positional-corrected window attention of already projected tokens → ``(N, F, C)`` (before ``to_out``).

    ``q``: ``(N, F, C)`` projected from tokens + ``p_{W−1}``; ``k``, ``v``: ``(N, F, C)`` projected from tokens
    without PE; ``k_pos``, ``v_pos``: ``(W, C)`` projected ``p_0..p_{W−1}`` (W = window length); ``scale``
    multiplies q·kᵀ; ``kernel``: the attention kernel (one call per chunk).
    """
    sequences, frames, channels = q.shape
    window = k_pos.shape[0]
    k_heads, v_heads = _split_position_heads(k_pos, v_pos, heads, scale)
    out = q.new_empty(q.shape)
    for rows in _chunks(sequences, frames, window, channels, heads, q, chunk_bytes):
        _attend_chunk(q[rows], k[rows], v[rows], k_heads, v_heads, heads, scale, kernel, out[rows])
    return out


@dataclass(frozen=True)
class PositionCorrectedWindowAttention:
    """AnimateZero temporal attention, a ``TemporalAttentionVariant`` for :class:`TemporalSelfAttention`.

    ``window_length``: frames per window, frame 0 included (≥ 2, at most the video length); None = the video
    length. ``kernel``: the attention kernel. ``chunk_bytes``: working memory per chunk of sequences; None =
    16 MiB on CPU, 256 MiB on accelerators. Honours ``attn.key_scale`` through ``attn.softmax_scale``.
    """

    window_length: int | None = None
    kernel: AttentionKernel = sdpa_attention
    chunk_bytes: int | None = None

    def __post_init__(self) -> None:
        length = self.window_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
            raise Pix2GifInputError(
                f"window_length {length!r} must be a whole number ≥ 2 (frames each frame attends to) or empty "
                "(= the video length)."
            )
        if self.chunk_bytes is not None and self.chunk_bytes < 1:
            raise Pix2GifInputError(f"chunk_bytes {self.chunk_bytes} must be positive (or empty for the default).")

    def __call__(self, attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
        """``hidden`` ``(N, F, C)`` layer-normed tokens, ``pe`` ``(F, C)`` → ``(N, F, C)`` before ``attn.to_out``."""
        sequences, frames, channels = hidden.shape
        window = resolve_window_length(self.window_length, frames)
        heads, scale = attn.heads, attn.softmax_scale
        k_heads, v_heads = _split_position_heads(attn.to_k(pe[:window]), attn.to_v(pe[:window]), heads, scale)
        query_pe = pe[window - 1]
        out = hidden.new_empty(hidden.shape)
        for rows in _chunks(sequences, frames, window, channels, heads, hidden, self.chunk_bytes):
            part = hidden[rows]
            q, k, v = attn.to_q(part + query_pe), attn.to_k(part), attn.to_v(part)
            _attend_chunk(q, k, v, k_heads, v_heads, heads, scale, self.kernel, out[rows])
        return out
