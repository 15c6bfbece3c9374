"""CLIP cosines of Follow-Your-Click's temporal consistency and text alignment, against numpy written from the
definitions (cosine = a·b / (|a| |b|)), and the chunked encoding against one call."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.metrics.clip_similarity import consecutive_similarities, embed_frames, text_similarities


def _numpy_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _embeddings(seed: int, frames: int = 5, width: int = 8) -> torch.Tensor:
    return torch.randn(frames, width, generator=torch.Generator().manual_seed(seed))


def test_consecutive_similarities_match_numpy():
    embeddings = _embeddings(0)
    rows = embeddings.numpy().astype(np.float64)
    expected = [_numpy_cosine(rows[k], rows[k + 1]) for k in range(len(rows) - 1)]
    assert consecutive_similarities(embeddings).tolist() == pytest.approx(expected, abs=1e-12)


def test_identical_frames_are_fully_consistent_at_any_scale():
    embeddings = _embeddings(1, frames=1).repeat(4, 1) * torch.tensor([[1.0], [2.0], [0.5], [3.0]])
    assert consecutive_similarities(embeddings).tolist() == pytest.approx([1.0] * 3, abs=1e-12)


def test_one_frame_is_refused():
    with pytest.raises(Pix2GifInputError, match="at least 2 frames"):
        consecutive_similarities(_embeddings(2, frames=1))


def test_text_similarities_match_numpy():
    text, images = _embeddings(3, frames=1)[0], _embeddings(4)
    expected = [_numpy_cosine(text.numpy().astype(np.float64), row) for row in images.numpy().astype(np.float64)]
    assert text_similarities(text, images).tolist() == pytest.approx(expected, abs=1e-12)


def test_text_of_another_width_is_refused():
    with pytest.raises(Pix2GifInputError, match="text embedding is 6 wide but the image embeddings are 8"):
        text_similarities(torch.ones(6), _embeddings(5))


def test_chunked_encoding_equals_one_call_and_reports_progress():
    frames = torch.rand(7, 4, 4, 4, generator=torch.Generator().manual_seed(6))
    projection = torch.randn(48, 5, generator=torch.Generator().manual_seed(7))
    calls, done = [], []

    def encode(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape)
        return batch.reshape(batch.shape[0], -1) @ projection

    chunked = embed_frames(encode, frames, chunk=3, after_chunk=done.append)
    assert [shape[0] for shape in calls] == [3, 3, 1] and all(shape[-1] == 3 for shape in calls)  # RGB only
    assert done == [3, 6, 7]
    assert torch.allclose(chunked, frames[..., :3].reshape(7, -1) @ projection, atol=1e-5)
