"""Working memory, estimated from shapes before a node allocates, against what ComfyUI reports free.

A node asks :func:`require` whether its estimate fits the device its tensors live on (RAM for the CPU);
when it does not, the user gets the estimate, what is free and what to lower – not a raw allocator error
asking for 128 GiB. :func:`frames_per_chunk` sizes the frame chunks of work that can run in pieces.
"""
from __future__ import annotations

import comfy.model_management
import torch

from .conventions import input_error

GIB = 2**30
USABLE_FRACTION = 0.9
"""Share of the free memory a node plans to use (the rest absorbs allocator slack and other processes)."""
CHUNK_BYTES = 512 * 2**20
"""Working set of one chunk of frames, when a node works in chunks."""
UNET_BYTES_PER_LATENT_PIXEL = 0.01 * 2**20
"""SD1.5-family UNet working memory per latent pixel per row and byte of the compute dtype in one model call
(ComfyUI's own estimate with fused attention, ``BaseModel.memory_required``)."""


def free_bytes(device: torch.device | str) -> int:
    """Memory ComfyUI reports free on ``device`` (system RAM for the CPU)."""
    return int(comfy.model_management.get_free_memory(torch.device(device)))


def require(node_title: str, needed_bytes: float, device: torch.device | str, what: str, lower: str) -> None:
    """Refuse, naming ``what`` needs the memory and what to ``lower``, when ``needed_bytes`` does not fit."""
    free = free_bytes(device)
    if needed_bytes > USABLE_FRACTION * free:
        raise input_error(node_title, f"{what} needs about {needed_bytes / GIB:.1f} GiB of memory on "
                                      f"{torch.device(device).type} and {free / GIB:.1f} GiB is free; {lower}")


def frames_per_chunk(bytes_per_frame: float, frames: int) -> int:
    """Frames per chunk so one chunk's working set stays near :data:`CHUNK_BYTES` (at least 1, at most all)."""
    return max(1, min(frames, int(CHUNK_BYTES // max(bytes_per_frame, 1.0))))


def unet_call_bytes(model, rows: int, latent_hw: tuple[int, int]) -> float:
    """Working memory of one call of ``model`` (a ComfyUI MODEL) on ``rows`` latents of ``latent_hw``."""
    height, width = latent_hw
    return UNET_BYTES_PER_LATENT_PIXEL * rows * height * width * comfy.model_management.dtype_size(
        model.model_dtype())
