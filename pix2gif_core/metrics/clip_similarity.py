"""Follow-Your-Click's CLIP metrics: temporal consistency (Tem-Consis) and text alignment (Text-align).

Temporal consistency: mean cosine similarity of the CLIP image embeddings of consecutive frames (1 = every frame
looks the same to CLIP). Text alignment: mean over frames of the cosine of the CLIP text embedding of the prompt
and each frame's image embedding. Both use the projected embeddings (the shared text–image space), as CLIP-score
metrics do; the paper's evaluation code was never released. The encoders are passed in, so this module runs on
any CLIP implementation.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import Pix2GifInputError

Encoder = Callable[[torch.Tensor], torch.Tensor]
"""(N, H, W, 3) RGB frames in [0, 1] → (N, D) projected image embeddings."""


def embed_frames(encode: Encoder, frames: torch.Tensor, chunk: int,
                 after_chunk: Callable[[int], None] | None = None) -> torch.Tensor:
    """(F, D) float32 embeddings of ``frames`` (F, H, W, C ≥ 3), ``chunk`` frames per ``encode`` call so the
    working memory stays that of ``chunk`` frames; ``after_chunk(done)`` is called after each call (progress,
    cancel)."""
    parts = []
    for first in range(0, frames.shape[0], chunk):
        parts.append(encode(frames[first:first + chunk, ..., :3]).float())
        if after_chunk is not None:
            after_chunk(min(first + chunk, frames.shape[0]))
    return torch.cat(parts)


def consecutive_similarities(embeddings: torch.Tensor) -> torch.Tensor:
    """(F-1,) cosine similarity of frame k and k+1 for ``embeddings`` (F, D), F ≥ 2."""
    if embeddings.shape[0] < 2:
        raise Pix2GifInputError(f"images holds {embeddings.shape[0]} frame but temporal consistency compares "
                                "consecutive frames; give a clip of at least 2 frames")
    return F.cosine_similarity(embeddings[:-1].double(), embeddings[1:].double(), dim=-1)


def text_similarities(text_embedding: torch.Tensor, image_embeddings: torch.Tensor) -> torch.Tensor:
    """(F,) cosine of ``text_embedding`` (D,) or (1, D) and each of ``image_embeddings`` (F, D)."""
    text = text_embedding.reshape(1, -1).double().to(image_embeddings.device)
    if text.shape[1] != image_embeddings.shape[1]:
        raise Pix2GifInputError(f"the text embedding is {text.shape[1]} wide but the image embeddings are "
                                f"{image_embeddings.shape[1]} wide; use a text and an image encoder of one CLIP")
    return F.cosine_similarity(text, image_embeddings.double(), dim=-1)
