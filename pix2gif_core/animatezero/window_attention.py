"""AnimateZero's positional-corrected causal window attention for AnimateDiff motion modules (methods.md §3.3).

Frame ``i`` (0-based) attends to a window of ``W`` slots that always starts with the first frame: slot ``j``
holds frame ``src(i, 0) = 0`` and ``src(i, j) = max(0, i − W + 1 + j)`` for ``j ≥ 1`` – while ``i < W − 1``
that is ``W − 1 − i`` copies of frame 0 followed by frames ``0..i`` (the paper's padded causal window), later
frame 0 followed by the ``W − 1`` frames up to ``i`` – and carries position encoding ``p_j``; the query carries
``p_{W−1}``, so the current frame always sits at the last position of a full window. With ``W`` = the video
length every frame sees frame 0 and all frames before it.

AnimateDiff adds the PE before the bias-free Q/K/V projections, so with ``Kx = to_k(x)``, ``Kp = to_k(pe)`` (and
``Vx``, ``Vp`` alike) ``K[i, j] = Kx[src(i, j)] + Kp[j]`` and ``V[i, j] = Vx[src(i, j)] + Vp[j]``. The window is
never materialised per query frame. Instead every sequence gets ``L = W + F − 1`` keys – frame 0 once per slot
it can occupy (keys ``0..W−1``) and frames ``1..F−1`` (keys ``W..L−1``) – and ONE call of the attention kernel
over them computes the window for all query frames, with heads widened from ``d`` to ``D = d + L`` (rounded up
to a multiple of 8) dimensions:

- key ``l`` is ``[Kx[frame(l)], e_l]`` and value ``l`` is ``[Vx[frame(l)], e_l]`` (``e_l`` the unit vector of
  the extra dimension ``l``; one GEMM projects the frames, one gather and one concatenation widen them); the query of frame ``i`` is ``[q_i, b_i]`` with ``b_i[l] = q_i·Kp[slot(i, l)]``
  when key ``l`` sits in slot ``slot(i, l)`` of row ``i``'s window, else a large negative number: the kernel's
  score is then exactly the window logit ``q_i·(Kx + Kp)`` or ``−∞``. One GEMM gives every query and its
  logits against the ``W`` slot PE keys, one gather puts them in key order, one concatenation widens them;
- the extra output dimensions are the key probabilities ``P (F × L)``; ``P_i·Vp[slot(i, ·)]`` is added in one
  more batched GEMM (one ``(L × d)`` table per frame and head).

The kernel is an :data:`~pix2gif_core.attention.AttentionKernel` (default SDPA; the nodes pass the host's); q, k
and v have the same width, so every host back-end applies, no mask needed. The per-layer tables (widened
weights, slot tables; about 37 small kernels) are built once per weights, dtype and shape and reused while the
weights are unchanged (rebuilt per call when gradients are on and under ``torch.compile``). This fused path runs on accelerators, all
sequences in one kernel call per layer.

On CPU, where the widened heads and the ``2F − 1`` keys cost more than they save, the default is the decomposed
path: scores ``q·Kxᵀ`` ``(F × F)`` read along diagonals (left-padded with ``W − 1`` copies of frame 0's column,
slot ``j`` of row ``i`` is padded column ``i + j``; the diagonal ``i + 0`` is overwritten with frame 0 so slot 0
always holds it) plus ``q·Kp`` give the ``(F × W)`` window logits; the softmax goes back through the same view
onto the frames and ``P·Vx + P_slots·Vp`` are two batched GEMMs. Sequences are processed in chunks of about
``chunk_bytes`` of working memory so the working set stays in cache. ``fused=True`` forces the fused path on
CPU (tests, host-kernel checks). Costs: tests/benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from ..attention import AttentionKernel, sdpa_attention
from ..errors import Pix2GifInputError

if TYPE_CHECKING:
    from ..animatediff.motion_module import TemporalSelfAttention

CPU_CHUNK_BYTES = 16 * 2**20
#: query entry (in the extra head dimensions) for a key outside the window: a logit of ``−1e4/√D``, whose
#: exponential is 0 in every dtype and which half precision still represents
OUTSIDE_WINDOW_QUERY = -1e4
#: widened head dimensions are padded to a multiple of this (the fused GPU kernels' alignment)
HEAD_DIM_ALIGNMENT = 8


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


def key_slots(frames: int, window: int) -> Tensor:
    """``(F, L)`` long, ``L = W + F − 1``: the window slot key ``l`` holds in row ``i``, or ``W`` when key ``l``
    is not in row ``i``'s window. Keys ``0..W−1`` are frame 0 in slot ``l``, keys ``W + m − 1`` frame ``m ≥ 1``."""
    rows = torch.arange(frames)[:, None]
    copies = torch.arange(window)[None]
    first_frame = torch.where((copies == 0) | (copies <= window - 1 - rows), copies, window)
    later = torch.arange(1, frames)[None]
    slot = later - rows + window - 1
    later_frames = torch.where((later <= rows) & (slot >= 1), slot, window)
    return torch.cat([first_frame, later_frames], dim=1)


class WindowTables(NamedTuple):
    """Per-layer constants of the fused window attention (h heads, d head dimensions, D widened ones).

    ``query_weight`` ``(C, h·(d + W + 1))`` and ``query_bias`` ``(h·(d + W + 1),)``: per head the query times
    the softmax scale and ``√D``, its logits against the ``W`` slot PE keys (query PE included) and a constant
    :data:`OUTSIDE_WINDOW_QUERY` column; ``query_slots`` ``(1, F, 1, L)`` long: which of those ``W + 1`` columns
    key ``l`` reads in row ``i``; ``query_padding`` ``(h, D − d − L)`` zeros; ``key_value_weight`` ``(C, 2C)``:
    the key and value projections; ``key_frames`` ``(L,)`` long: the frame of each key; ``key_extras``
    ``(L, 2, h, D − d)``: the extra dimensions of each key and value (``e_l``); ``value_positions``
    ``(F·h, L, d)``: ``Vp`` of the slot each key holds per frame and head (0 outside the window).
    """

    query_weight: Tensor
    query_bias: Tensor
    query_slots: Tensor
    query_padding: Tensor
    key_value_weight: Tensor
    key_frames: Tensor
    key_extras: Tensor
    value_positions: Tensor


def widened_head_dim(head_dim: int, keys: int) -> int:
    """``d + L`` rounded up to a multiple of :data:`HEAD_DIM_ALIGNMENT`."""
    return -(-(head_dim + keys) // HEAD_DIM_ALIGNMENT) * HEAD_DIM_ALIGNMENT


def window_tables(attn: TemporalSelfAttention, pe: Tensor, frames: int, window: int) -> WindowTables:
    """The :class:`WindowTables` of ``attn`` for ``frames`` frames and ``window`` slots; ``pe`` ``(F, C)``."""
    heads, channels = attn.heads, attn.to_q.in_features
    d = channels // heads
    keys = window + frames - 1
    width = widened_head_dim(d, keys)
    root, scale = math.sqrt(width), attn.softmax_scale
    dtype, device = pe.dtype, pe.device
    w_q, w_k, w_v = (layer.weight.to(dtype).view(heads, d, channels) for layer in (attn.to_q, attn.to_k, attn.to_v))
    slots = key_slots(frames, window).to(device)  # (F, L), W = outside the window
    k_pos = torch.einsum("sc,hdc->hsd", pe[:window], w_k)  # (h, W, d)
    # per head: [q (d) | q·Kp[j] for the W slots | a constant column for keys outside the window]
    query_weight = torch.cat([w_q, torch.einsum("hdc,hsd->hsc", w_q, k_pos), w_q.new_zeros(heads, 1, channels)],
                             dim=1) * (scale * root)  # (h, d + W + 1, C)
    query_bias = query_weight @ pe[window - 1]  # the query's PE, (h, d + W + 1)
    query_bias[:, -1] = OUTSIDE_WINDOW_QUERY
    padded_pe = torch.cat([pe[:window], pe.new_zeros(1, channels)])  # slot W = zero position term
    v_pos = torch.einsum("sc,hdc->shd", padded_pe, w_v)[slots]  # (F, L, h, d)
    key_value_weight = torch.cat([w_k, w_v]).view(2 * channels, channels).T
    key_extras = pe.new_zeros(keys, width - d)
    key_extras[:, :keys] = torch.eye(keys, dtype=dtype, device=device)
    value_positions = v_pos.permute(0, 2, 1, 3).reshape(frames * heads, keys, d)
    key_frames = torch.cat([torch.zeros(window, dtype=torch.long), torch.arange(1, frames)]).to(device)
    return WindowTables(query_weight.reshape(heads * (d + window + 1), channels).T, query_bias.flatten(),
                        slots.view(1, frames, 1, keys), pe.new_zeros(heads, width - d - keys), key_value_weight,
                        key_frames, key_extras[:, None, None].expand(keys, 2, heads, width - d), value_positions)


def _attend_chunk(hidden: Tensor, tables: WindowTables, heads: int, window: int, kernel: AttentionKernel,
                  out: Tensor, sequence_scales: Tensor | None = None) -> None:
    """Window attention of the layer-normed tokens ``hidden`` ``(n, F, C)`` of one chunk, written into ``out``
    ``(n, F, C)`` (before ``to_out``); ``sequence_scales`` ``(n, 1, 1)``: the chunk's per-sequence key scales
    (applied to the queries, which scales the same logits). Autograd-safe: no in-place writes on tensors backward
    reads."""
    n, frames, channels = hidden.shape
    keys, d = tables.value_positions.shape[1:]
    width = d + keys + tables.query_padding.shape[-1]
    projected = torch.addmm(tables.query_bias, hidden.reshape(n * frames, channels), tables.query_weight)
    projected = projected.view(n, frames, heads, d + window + 1)
    if sequence_scales is not None:  # every column but the constant out-of-window one is linear in the query
        factor = sequence_scales.reshape(n, 1, 1, 1).expand(n, 1, 1, d + window + 1).clone()
        factor[..., -1] = 1
        projected = projected * factor
    window_logits = projected[..., d:].gather(-1, tables.query_slots.expand(n, frames, heads, keys))
    queries = torch.cat([projected[..., :d], window_logits, tables.query_padding.expand(n, frames, -1, -1)], -1)
    keys_values = torch.matmul(hidden, tables.key_value_weight).view(n, frames, 2, heads, d)[:, tables.key_frames]
    keys_values = torch.cat([keys_values, tables.key_extras.expand(n, -1, -1, -1, -1)], dim=-1)  # (n, L, 2, h, D)
    attended = kernel(queries.transpose(1, 2), keys_values[:, :, 0].transpose(1, 2),
                      keys_values[:, :, 1].transpose(1, 2))
    by_frame_head = attended.transpose(1, 2).reshape(n, frames * heads, width).transpose(0, 1)  # (F·h, n, D)
    result = torch.baddbmm(by_frame_head[..., :d], by_frame_head[..., d:d + keys], tables.value_positions)
    out.view(n, frames, heads, d).copy_(result.view(frames, heads, n, d).permute(2, 0, 1, 3))


def _slot_view(padded: Tensor, window: int) -> Tensor:
    """``(B, F, F + W − 1)`` contiguous → ``(B, F, W)`` view with ``[b, i, j] = padded[b, i, i + j]``."""
    batch_stride, row_stride, _ = padded.stride()
    return padded.as_strided((padded.shape[0], padded.shape[1], window), (batch_stride, row_stride + 1, 1))


def _attend_chunk_decomposed(hidden: Tensor, attn: TemporalSelfAttention, k_pos: Tensor, v_pos: Tensor,
                             query_pe: Tensor, out: Tensor, sequence_scales: Tensor | None = None) -> None:
    """Window attention of one chunk ``hidden`` ``(n, F, C)`` by batched GEMMs, written into ``out``.

    ``k_pos`` ``(h, d, W)`` (times the softmax scale) and ``v_pos`` ``(h, W, d)``: projected slot PE;
    ``query_pe`` ``(C,)``: ``p_{W−1}``; ``sequence_scales`` ``(n, 1, 1)``: per-sequence key scales (applied to
    the queries: every logit is linear in them). Autograd-safe: in-place writes only touch fresh tensors that no
    backward formula reads.
    """
    n, f, channels = hidden.shape
    h, w = attn.heads, k_pos.shape[-1]
    d, pad = channels // h, w - 1

    def head_major(tokens: Tensor) -> Tensor:
        """``(n, F, C)`` → contiguous ``(h·n, F, d)``."""
        return tokens.reshape(n, f, h, d).permute(2, 0, 1, 3).reshape(h * n, f, d)

    q = head_major(attn.to_q(hidden + query_pe))
    if sequence_scales is not None:
        q = (q.view(h, n, f, d) * sequence_scales.view(1, n, 1, 1)).view(h * n, f, d)
    k, v = head_major(attn.to_k(hidden)), head_major(attn.to_v(hidden))
    frame_scores = torch.bmm(q, k.transpose(1, 2)).mul_(attn.softmax_scale)  # (h·n, F, F)
    padded_scores = torch.cat([frame_scores[:, :, :1].expand(-1, -1, pad), frame_scores], dim=-1)
    padded_scores.diagonal(dim1=1, dim2=2).copy_(frame_scores[:, :, 0])  # slot 0 of every row: frame 0
    logits = torch.bmm(q.view(h, n * f, d), k_pos).view(h * n, f, w)
    logits += _slot_view(padded_scores, w)
    probabilities = logits.softmax(-1)
    padded_probabilities = probabilities.new_zeros(h * n, f, f + pad)
    _slot_view(padded_probabilities, w).copy_(probabilities)
    padded_probabilities.diagonal(dim1=1, dim2=2).zero_()  # slot 0 goes to frame 0 below
    frame_weights = padded_probabilities[:, :, pad:]
    frame_weights[:, :, 0] += padded_probabilities[:, :, :pad].sum(-1) + probabilities[:, :, 0]
    attended = torch.bmm(frame_weights, v).view(h, n * f, d)
    attended.baddbmm_(probabilities.view(h, n * f, w), v_pos)
    out.view(n, f, h, d).copy_(attended.view(h, n, f, d).permute(1, 2, 0, 3))


def _chunks(sequences: int, bytes_per_sequence: int, like: Tensor, chunk_bytes: int | None) -> Iterator[slice]:
    """Row ranges covering ``sequences``, each needing about ``chunk_bytes`` of working memory (None: 16 MiB on
    CPU, one chunk on accelerators)."""
    if chunk_bytes is None and like.device.type != "cpu":
        yield slice(0, sequences)
        return
    per_chunk = max(1, (chunk_bytes or CPU_CHUNK_BYTES) // bytes_per_sequence)
    for start in range(0, sequences, per_chunk):
        yield slice(start, min(start + per_chunk, sequences))


def _weights_signature(attn: TemporalSelfAttention, pe: Tensor, window: int) -> tuple:
    """What the tables of ``attn`` depend on: shapes, dtype, device, key scale and the weights' tensors, storage
    and in-place version. ComfyUI patches and moves weights by replacing them (new tensor, new storage);
    inference tensors (its weights under ``torch.inference_mode``) keep no version, so an in-place change to
    one of them under inference mode is not seen."""
    tensors = (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight, attn.pe)
    return (pe.shape[0], window, pe.dtype, pe.device, attn.key_scale,
            tuple((id(t), t.data_ptr(), t.device, None if t.is_inference() else t._version) for t in tensors))


@dataclass(frozen=True)
class PositionCorrectedWindowAttention:
    """AnimateZero temporal attention, a ``TemporalAttentionVariant`` for :class:`TemporalSelfAttention`.

    ``window_length``: frames per window, frame 0 included (≥ 2, at most the video length); None = the video
    length. ``kernel``: the attention kernel (fused path). ``chunk_bytes``: working memory per chunk of
    sequences; None = 16 MiB on CPU, all sequences at once on accelerators. ``fused``: the fused kernel path;
    None = on accelerators (CPU: the decomposed path). Honours ``attn.key_scale`` through ``attn.softmax_scale``
    and ``attn.key_scale_map`` (per-sequence key scales) by scaling each sequence's queries.
    """

    window_length: int | None = None
    kernel: AttentionKernel = sdpa_attention
    chunk_bytes: int | None = None
    fused: bool | None = None
    _tables: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, init=False,
                                               repr=False, compare=False)

    def __post_init__(self) -> None:
        length = self.window_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
            raise Pix2GifInputError(
                f"window_length {length!r} must be a whole number ≥ 2 (frames each frame attends to) or empty "
                "(= the video length)."
            )
        if self.chunk_bytes is not None and self.chunk_bytes < 1:
            raise Pix2GifInputError(f"chunk_bytes {self.chunk_bytes} must be positive (or empty for the default).")

    def tables(self, attn: TemporalSelfAttention, pe: Tensor, window: int) -> WindowTables:
        """``attn``'s tables, reused while its weights, key scale, dtype and shape are unchanged; rebuilt per
        call with gradients on and under ``torch.compile``."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return window_tables(attn, pe, pe.shape[0], window)
        signature = _weights_signature(attn, pe, window)
        cached = self._tables.get(attn)
        if cached is None or cached[0] != signature:
            cached = (signature, window_tables(attn, pe, pe.shape[0], window))
            self._tables[attn] = cached
        return cached[1]

    def __call__(self, attn: TemporalSelfAttention, hidden: Tensor, pe: Tensor) -> Tensor:
        """``hidden`` ``(N, F, C)`` layer-normed tokens, ``pe`` ``(F, C)`` → ``(N, F, C)`` before ``attn.to_out``."""
        sequences, frames, channels = hidden.shape
        window = resolve_window_length(self.window_length, frames)
        heads, size = attn.heads, hidden.element_size()
        out = hidden.new_empty(hidden.shape)
        scales = attn.sequence_key_scales(sequences)
        if self.fused if self.fused is not None else hidden.device.type != "cpu":
            tables = self.tables(attn, pe, window)
            keys = window + frames - 1
            width = heads * widened_head_dim(channels // heads, keys)
            per_sequence = size * (keys * (2 * channels + 3 * width) + frames * (4 * width + 3 * channels))
            for rows in _chunks(sequences, per_sequence, hidden, self.chunk_bytes):
                _attend_chunk(hidden[rows], tables, heads, window, self.kernel, out[rows],
                              None if scales is None else scales[rows])
            return out
        scale, d = attn.softmax_scale, channels // heads
        k_pos = attn.to_k(pe[:window]).reshape(window, heads, d).permute(1, 2, 0) * scale
        v_pos = attn.to_v(pe[:window]).reshape(window, heads, d).transpose(0, 1).contiguous()
        per_sequence = size * frames * (8 * channels + heads * (4 * frames + 3 * window))
        for rows in _chunks(sequences, per_sequence, hidden, self.chunk_bytes):
            _attend_chunk_decomposed(hidden[rows], attn, k_pos, v_pos, pe[window - 1], out[rows],
                                     None if scales is None else scales[rows])
        return out
