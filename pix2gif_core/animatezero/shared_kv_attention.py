"""AnimateZero spatial appearance control: every frame's spatial self-attention reads the first frame's keys and
values (methods.md §3.2).

Inputs are ComfyUI's attn1 tensors ``(B·F, T, C)``: the batch is ``chunks × video_length`` (cond/uncond chunks,
each ``video_length`` consecutive frames), ``T = H·W`` tokens, heads not split. Frame 0 of each chunk is its
anchor; chunks never mix. ``attn1_patch(n, context, value, extra_options)`` sees the normed hidden states before
``to_k``/``to_v`` – pass them through :func:`first_frame_kv`; ``attn1_replace(q, k, v, extra_options)`` sees the
projections and returns the attention before ``to_out`` – use :func:`shared_kv_attention`. Both give the same
result because the projections act on each token alone.

The anchor keys/values may also come from elsewhere (``anchors``): AnimateZero's default takes those the image
pass computed for the first frame (:mod:`.first_frame_features`). Attention runs through an
:data:`~pix2gif_core.attention.AttentionKernel` (default SDPA; the nodes pass the host's).

Modes (the paper does not say which, methods.md §3.2, §9 item 2): ``"replace"`` – keys/values are the anchor's
tokens only; ``"concat"`` – each frame's own tokens followed by the anchor's (2T keys; for the anchor itself this
equals plain self-attention).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..attention import AttentionKernel, sdpa_attention
from ..errors import Pix2GifInputError

SHARING_MODES = ("replace", "concat")


def _chunk_count(tokens: Tensor, video_length: int, name: str) -> int:
    """Number of ``video_length``-frame chunks in the batch of ``tokens`` ``(B·F, T, C)``."""
    if tokens.dim() != 3:
        raise Pix2GifInputError(
            f"{name} has shape {tuple(tokens.shape)}; expected (frames × chunks, tokens, channels)."
        )
    if video_length < 1 or tokens.shape[0] % video_length:
        raise Pix2GifInputError(
            f"{name} holds {tokens.shape[0]} frames, not a whole number of videos of video_length={video_length}; "
            "make the batch (frames × cond/uncond chunks) a multiple of video_length."
        )
    return tokens.shape[0] // video_length


def _check_mode(mode: str) -> None:
    if mode not in SHARING_MODES:
        raise Pix2GifInputError(
            f"key/value sharing mode '{mode}' is unknown; choose one of {', '.join(SHARING_MODES)}."
        )


def first_frame_kv(k: Tensor, v: Tensor, video_length: int, mode: str) -> tuple[Tensor, Tensor]:
    """Keys and values of every frame taken from its chunk's frame 0.

    ``k``, ``v``: ``(B·F, T, C)`` hidden states or projections. ``"replace"`` → ``(B·F, T, C)`` (frame 0's
    tokens for every frame); ``"concat"`` → ``(B·F, 2T, C)`` (own tokens, then frame 0's).
    """
    _check_mode(mode)
    if k.shape != v.shape:
        raise Pix2GifInputError(f"keys {tuple(k.shape)} and values {tuple(v.shape)} must have the same shape.")
    chunks = _chunk_count(k, video_length, "keys")
    _, tokens, channels = k.shape

    def share(states: Tensor) -> Tensor:
        frames = states.reshape(chunks, video_length, tokens, channels)
        anchor = frames[:, :1].expand(-1, video_length, -1, -1)
        if mode == "replace":
            return anchor.reshape(chunks * video_length, tokens, channels)
        return torch.cat([frames, anchor], dim=2).reshape(chunks * video_length, 2 * tokens, channels)

    return share(k), share(v)


def _multi_head_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, kernel: AttentionKernel) -> Tensor:
    """``kernel`` attention of ``q (B, Lq, C)`` over ``k, v (B, Lk, C)`` with ``heads`` heads → ``(B, Lq, C)``."""
    batch, queries, channels = q.shape

    def split(tokens: Tensor) -> Tensor:
        return tokens.reshape(tokens.shape[0], tokens.shape[1], heads, channels // heads).transpose(1, 2)

    attended = kernel(split(q), split(k), split(v))
    return attended.transpose(1, 2).reshape(batch, queries, channels)


#: device types whose σ :func:`in_sigma_range` reads (reading waits for no other device)
READ_ON_HOST = ("cpu",)


def in_sigma_range(sigmas: Tensor, sigma_range: tuple[float, float]) -> bool | Tensor:
    """Whether a UNet call at ``sigmas`` (its batch's levels; the largest counts) lies in ``sigma_range`` =
    ``(σ_end, σ_start)``, bounds included, as :func:`shared_kv_attention`'s ``active``: a Python bool for a CPU
    tensor (read at no cost; the attention then skips what it does not need), else – on an accelerator, or while
    ``torch.compile`` traces – a 0-dim bool on the tensor's device (nothing read, no device sync)."""
    sigma_end, sigma_start = sigma_range
    if sigmas.device.type in READ_ON_HOST and not torch.compiler.is_compiling():
        return sigma_end <= float(sigmas.max()) <= sigma_start
    level = sigmas.max()
    return (level >= sigma_end) & (level <= sigma_start)


def _own_or_anchor(own: Tensor, anchor: Tensor, video_length: int, mode: str, active: Tensor) -> Tensor:
    """Per-frame keys (or values) ``(B·F, T or 2T, C)`` from ``own`` ``(B·F, T, C)`` and the chunks' ``anchor``
    ``(chunks, T, C)``: the anchor's tokens where ``active`` (after the own ones for "concat"), else the own ones."""
    frames = own.reshape(anchor.shape[0], video_length, *own.shape[1:])
    picked = torch.where(active, anchor[:, None], frames)
    if mode == "concat":
        picked = torch.cat([frames, picked], dim=2)
    return picked.reshape(own.shape[0], -1, own.shape[2])


def shared_kv_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, video_length: int, mode: str, *,
                        kernel: AttentionKernel = sdpa_attention,
                        anchors: tuple[Tensor, Tensor] | None = None, active: bool | Tensor | None = None) -> Tensor:
    """Spatial self-attention with keys/values from each chunk's anchor → ``(B·F, T, C)`` (before ``to_out``).

    ``q``, ``k``, ``v``: projected ``(B·F, T, C)`` as ``attn1_replace`` receives them; ``heads``:
    ``extra_options["n_heads"]``; softmax scale ``1/√(C/heads)``. ``anchors``: keys and values
    ``(chunks, T', C)`` of each chunk's first frame; None = frame 0 of each chunk of ``k``, ``v``.
    ``active`` (e.g. :func:`in_sigma_range`): None or True = shared; False = every frame's plain self-attention;
    a 0-dim bool tensor = decided on its device, nothing read: where False "replace" is plain self-attention and
    "concat" attends to each frame's own tokens twice (the same softmax: weights halve, values add up), at the cost
    of a shared step.
    """
    _check_mode(mode)
    chunks = _chunk_count(q, video_length, "queries")
    if k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2] or q.shape[2] % heads:
        raise Pix2GifInputError(
            f"queries {tuple(q.shape)} and keys {tuple(k.shape)} must share batch and channels, and channels must "
            f"split into {heads} heads."
        )
    _, tokens, channels = q.shape
    if anchors is None:
        anchor_k, anchor_v = (t.reshape(chunks, video_length, t.shape[1], channels)[:, 0] for t in (k, v))
    else:
        anchor_k, anchor_v = anchors
        if anchor_k.shape[0] != chunks or anchor_k.shape[2] != channels or anchor_v.shape != anchor_k.shape:
            raise Pix2GifInputError(
                f"first-frame keys {tuple(anchor_k.shape)} and values {tuple(anchor_v.shape)} must hold one "
                f"(tokens, {channels}) anchor for each of the {chunks} videos.")
    if active is False:
        return _multi_head_attention(q, k, v, heads, kernel)
    if isinstance(active, Tensor):
        if anchor_k.shape[1] != tokens:
            raise Pix2GifInputError(f"first-frame keys {tuple(anchor_k.shape)} must have the frames' {tokens} tokens "
                                    "to be shared for part of the denoising.")
        return _multi_head_attention(q, *(_own_or_anchor(own, anchor, video_length, mode, active)
                                          for own, anchor in ((k, anchor_k), (v, anchor_v))), heads, kernel)
    if mode == "concat":
        def own_then_anchor(own: Tensor, anchor: Tensor) -> Tensor:
            frames = own.reshape(chunks, video_length, own.shape[1], channels)
            shared = anchor[:, None].expand(-1, video_length, -1, -1)
            return torch.cat([frames, shared], dim=2).reshape(chunks * video_length, -1, channels)

        return _multi_head_attention(q, own_then_anchor(k, anchor_k), own_then_anchor(v, anchor_v), heads, kernel)
    # Every frame of a chunk attends to the same anchor tokens: fold the frames into the query length.
    attended = _multi_head_attention(q.reshape(chunks, video_length * tokens, channels), anchor_k, anchor_v, heads,
                                     kernel)
    return attended.reshape(chunks * video_length, tokens, channels)
