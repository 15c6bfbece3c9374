"""AnimateZero's positional-corrected causal window attention for AnimateDiff motion modules (methods.md §3.3).

Frame ``i`` (0-based) attends to a window of ``W`` slots. Slot ``j`` holds frame
``src(i, j) = max(0, i − W + 1 + j)`` – while ``i < W − 1`` that is ``W − 1 − i`` copies of frame 0 followed by
frames ``0..i``, afterwards frames ``i − W + 1..i`` – and carries position encoding ``p_j``; the query carries
``p_{W−1}``, so the current frame always sits at the last position of a full window.

AnimateDiff adds the PE before the bias-free Q/K/V projections, so with ``Kx = to_k(x)``, ``Kp = to_k(pe)`` (and
``Vx``, ``Vp`` alike) ``K[i, j] = Kx[src(i, j)] + Kp[j]`` and ``V[i, j] = Vx[src(i, j)] + Vp[j]``. The window is
therefore never materialised (that would cost ``W`` copies of the keys and values per query frame):

- scores ``q_i·Kx[src(i, j)]`` are the ``(F × F)`` matrix ``q·Kxᵀ`` read along diagonals: left-pad its columns
  with ``W − 1`` copies of column 0, then slot ``j`` of row ``i`` is padded column ``i + j`` (a strided view);
  ``q_i·Kp[j]`` is one GEMM per head over all sequences;
- the probabilities go back through the same diagonal view into a zeroed padded matrix whose padding columns are
  summed onto frame 0, giving per-frame weights ``(F × F)`` for ``Vx``; ``P·Vp`` is again one GEMM per head.

Sequences are processed in chunks of about ``chunk_bytes`` of working memory, projections included: on CPU the
working set stays in cache, and peak memory stays below that of global attention, which projects every sequence
at once. Costs against global attention: tests/benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import Pix2GifInputError

if TYPE_CHECKING:
    from ..animatediff.motion_module import TemporalSelfAttention

CPU_CHUNK_BYTES = 16 * 2**20
ACCELERATOR_CHUNK_BYTES = 256 * 2**20


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


def _slot_view(padded: Tensor, window: int) -> Tensor:
    """``(B, F, F + W − 1)`` contiguous → ``(B, F, W)`` view with ``[b, i, j] = padded[b, i, i + j]``."""
    batch_stride, row_stride, _ = padded.stride()
    return padded.as_strided((padded.shape[0], padded.shape[1], window), (batch_stride, row_stride + 1, 1))


def _attend_chunk(
    q: Tensor, k: Tensor, v: Tensor, k_pos: Tensor, v_pos: Tensor, heads: int, scale: float, out: Tensor
) -> None:
    """Window attention of one chunk of sequences, written into ``out``.

    ``q`` (query PE included), ``k``, ``v`` (no PE) and ``out``: ``(n, F, C)``; ``k_pos`` ``(h, d, W)`` (already
    multiplied by ``scale``) and ``v_pos`` ``(h, W, d)``: projected PE of the window slots; ``scale`` multiplies
    q·kᵀ. Autograd-safe: in-place writes only touch fresh tensors that no backward formula reads.
    """
    n, f, channels = q.shape
    h, d, w = heads, channels // heads, k_pos.shape[-1]
    pad = w - 1

    def head_major(tokens: Tensor) -> Tensor:
        """``(n, F, C)`` → contiguous ``(h·n, F, d)``."""
        return tokens.reshape(n, f, h, d).permute(2, 0, 1, 3).reshape(h * n, f, d)

    q_heads, k_heads, v_heads = head_major(q), head_major(k), head_major(v)
    frame_scores = torch.bmm(q_heads, k_heads.transpose(1, 2)).mul_(scale)  # (h·n, F, F)
    padded_scores = torch.cat([frame_scores[:, :, :1].expand(-1, -1, pad), frame_scores], dim=-1)
    logits = torch.bmm(q_heads.view(h, n * f, d), k_pos).view(h * n, f, w)
    logits += _slot_view(padded_scores, w)
    probabilities = logits.softmax(-1)
    padded_probabilities = probabilities.new_zeros(h * n, f, f + pad)
    _slot_view(padded_probabilities, w).copy_(probabilities)
    frame_weights = padded_probabilities[:, :, pad:]
    frame_weights[:, :, 0] += padded_probabilities[:, :, :pad].sum(-1)
    attended = torch.bmm(frame_weights, v_heads).view(h, n * f, d)
    attended.baddbmm_(probabilities.view(h, n * f, w), v_pos)
    out.view(n, f, h, d).copy_(attended.view(h, n, f, d).permute(1, 2, 0, 3))


def _chunks(
    sequences: int, frames: int, window: int, channels: int, heads: int, like: Tensor, chunk_bytes: int | None
) -> Iterator[slice]:
    """Row ranges covering ``sequences``, each needing about ``chunk_bytes`` of working memory."""
    if chunk_bytes is None:
        chunk_bytes = CPU_CHUNK_BYTES if like.device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    bytes_per_sequence = like.element_size() * frames * (8 * channels + heads * (4 * frames + 3 * window))
    per_chunk = max(1, chunk_bytes // bytes_per_sequence)
    for start in range(0, sequences, per_chunk):
        yield slice(start, min(start + per_chunk, sequences))


def _split_position_heads(k_pos: Tensor, v_pos: Tensor, heads: int, scale: float) -> tuple[Tensor, Tensor]:
    """Projected window PE ``(W, C)`` → keys ``(h, d, W)`` times ``scale`` and values ``(h, W, d)``."""
    window, channels = k_pos.shape
    k_heads = k_pos.reshape(window, heads, channels // heads).permute(1, 2, 0) * scale
    v_heads = v_pos.reshape(window, heads, channels // heads).transpose(0, 1).contiguous()
    return k_heads, v_heads


def attend_window(
    q: Tensor, k: Tensor, v: Tensor, k_pos: Tensor, v_pos: Tensor, *, heads: int, scale: float,
    chunk_bytes: int | None = None,
) -> Tensor:
    """Positional-corrected window attention of already projected tokens → ``(N, F, C)`` (before ``to_out``).

    ``q``: ``(N, F, C)`` projected from tokens + ``p_{W−1}``; ``k``, ``v``: ``(N, F, C)`` projected from tokens
    without PE; ``k_pos``, ``v_pos``: ``(W, C)`` projected ``p_0..p_{W−1}`` (W = window length); ``scale``
    multiplies q·kᵀ.
    """
    sequences, frames, channels = q.shape
    window = k_pos.shape[0]
    k_heads, v_heads = _split_position_heads(k_pos, v_pos, heads, scale)
    out = q.new_empty(q.shape)
    for rows in _chunks(sequences, frames, window, channels, heads, q, chunk_bytes):
        _attend_chunk(q[rows], k[rows], v[rows], k_heads, v_heads, heads, scale, out[rows])
    return out


@dataclass(frozen=True)
class PositionCorrectedWindowAttention:
    """AnimateZero temporal attention, a ``TemporalAttentionVariant`` for :class:`TemporalSelfAttention`.

    ``window_length``: frames per window (≥ 2, at most the video length); None = the video length.
    ``chunk_bytes``: working memory per chunk of sequences; None = 16 MiB on CPU, 256 MiB on accelerators.
    Honours ``attn.key_scale`` through ``attn.softmax_scale``.
    """

    window_length: int | None = None
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
            _attend_chunk(q, k, v, k_heads, v_heads, heads, scale, out[rows])
        return out
