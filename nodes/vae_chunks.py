"""VAE encode / decode of a clip in chunks of frames, sized by ComfyUI's own per-frame VAE estimate, with a
progress step and a Cancel check per chunk (the result is the same as in one piece: the VAE sees frames alone)."""
from __future__ import annotations

from collections.abc import Callable

import comfy.model_management
import torch
from torch import Tensor

from . import memory_budget

#: called after each chunk with the frames done so far
Progress = Callable[[int], None]


def _in_chunks(frames: Tensor, per_frame_bytes: float, code: Callable[[Tensor], Tensor],
               progress: Progress | None) -> Tensor:
    chunk = memory_budget.frames_per_chunk(per_frame_bytes, frames.shape[0])
    pieces = []
    for start in range(0, frames.shape[0], chunk):
        comfy.model_management.throw_exception_if_processing_interrupted()
        pieces.append(code(frames[start:start + chunk]))
        if progress is not None:
            progress(start + pieces[-1].shape[0])
    return torch.cat(pieces)


def encode_frames(vae, pixels: Tensor, progress: Progress | None = None) -> Tensor:
    """``pixels (F, H, W, 3)`` in [0, 1] → LATENT samples ``(F, 4, H/8, W/8)``."""
    per_frame = vae.memory_used_encode((1, 3, *pixels.shape[1:3]), vae.vae_dtype)
    return _in_chunks(pixels, per_frame, lambda chunk: vae.encode(chunk[..., :3]), progress)


def decode_frames(vae, samples: Tensor, progress: Progress | None = None) -> Tensor:
    """LATENT samples ``(F, 4, h, w)`` → IMAGE ``(F, 8h, 8w, 3)``."""
    per_frame = vae.memory_used_decode((1, *samples.shape[1:]), vae.vae_dtype)
    return _in_chunks(samples, per_frame, lambda chunk: vae.decode(chunk)[..., :3], progress)
