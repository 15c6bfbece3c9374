"""AnimateZero window attention against a naive reference that builds every padded window explicitly."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatediff.motion_module import TemporalSelfAttention
from pix2gif_core.animatezero.window_attention import PositionCorrectedWindowAttention, attend_window


def make_attention(channels: int = 8, heads: int = 2, key_scale: float = 1.0) -> TemporalSelfAttention:
    torch.manual_seed(0)
    attn = TemporalSelfAttention(channels, pe_length=32, heads=heads).double()
    attn.key_scale = key_scale
    return attn


def window_frames(i: int, window: int) -> list[int]:
    """0-based frames in the window of query frame i: (W−1−i) copies of frame 0, then frames up to i."""
    if i + 1 >= window:
        return list(range(i - window + 1, i + 1))
    return [0] * (window - 1 - i) + list(range(i + 1))


def naive_window_attention(attn: TemporalSelfAttention, hidden: torch.Tensor, pe: torch.Tensor, window: int):
    """Per query frame: materialise the padded window, add p_0..p_{W−1}, query + p_{W−1}, plain softmax attention."""
    sequences, frames, channels = hidden.shape
    heads, head_dim = attn.heads, channels // attn.heads
    scale = attn.key_scale / head_dim**0.5
    weight_q, weight_k, weight_v = attn.to_q.weight, attn.to_k.weight, attn.to_v.weight
    outputs = []
    for i in range(frames):
        tokens = hidden[:, window_frames(i, window)] + pe[:window]  # (N, W, C)
        query = (hidden[:, i] + pe[window - 1]) @ weight_q.T  # (N, C)
        keys = (tokens @ weight_k.T).reshape(sequences, window, heads, head_dim)
        values = (tokens @ weight_v.T).reshape(sequences, window, heads, head_dim)
        logits = torch.einsum("nhd,nwhd->nhw", query.reshape(sequences, heads, head_dim), keys) * scale
        outputs.append(torch.einsum("nhw,nwhd->nhd", logits.softmax(-1), values).reshape(sequences, channels))
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize(
    ("frames", "window_length", "heads"),
    [(6, None, 2), (6, 4, 2), (7, 2, 4), (2, None, 2), (2, 2, 1), (5, 5, 8)],
)
def test_matches_naive_padded_windows(frames, window_length, heads):
    attn = make_attention(channels=16, heads=heads)
    hidden = torch.randn(5, frames, 16, dtype=torch.float64)
    pe = torch.randn(frames, 16, dtype=torch.float64)  # random rows: a wrong PE slot cannot hide
    window = window_length or frames
    expected = naive_window_attention(attn, hidden, pe, window)
    got = PositionCorrectedWindowAttention(window_length)(attn, hidden, pe)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_chunked_sequences_with_tail_match_reference():
    attn = make_attention()
    hidden = torch.randn(7, 5, 8, dtype=torch.float64)
    pe = torch.randn(5, 8, dtype=torch.float64)
    bytes_per_sequence = 8 * 5 * (8 * 8 + 2 * (4 * 5 + 3 * 3))
    variant = PositionCorrectedWindowAttention(window_length=3, chunk_bytes=3 * bytes_per_sequence)  # 3 + 3 + 1
    torch.testing.assert_close(variant(attn, hidden, pe), naive_window_attention(attn, hidden, pe, 3))


def test_attend_window_on_projections_matches_reference():
    attn = make_attention()
    hidden = torch.randn(4, 6, 8, dtype=torch.float64)
    pe = torch.randn(6, 8, dtype=torch.float64)
    with torch.no_grad():
        got = attend_window(
            attn.to_q(hidden + pe[3]), attn.to_k(hidden), attn.to_v(hidden), attn.to_k(pe[:4]), attn.to_v(pe[:4]),
            heads=attn.heads, scale=attn.softmax_scale, chunk_bytes=1,
        )
    torch.testing.assert_close(got, naive_window_attention(attn, hidden, pe, 4))


@pytest.mark.parametrize("key_scale", [0.5, 1.7])
def test_key_scale_is_honoured(key_scale):
    attn = make_attention(key_scale=key_scale)
    hidden = torch.randn(3, 6, 8, dtype=torch.float64)
    pe = torch.randn(6, 8, dtype=torch.float64)
    got = PositionCorrectedWindowAttention(4)(attn, hidden, pe)
    torch.testing.assert_close(got, naive_window_attention(attn, hidden, pe, 4))
    attn.key_scale = 1.0
    assert (got - PositionCorrectedWindowAttention(4)(attn, hidden, pe)).abs().max() > 1e-3


def test_zero_key_scale_averages_the_window_slots():
    attn = make_attention(key_scale=0.0)
    hidden = torch.randn(3, 5, 8, dtype=torch.float64)
    pe = torch.randn(5, 8, dtype=torch.float64)
    window = 3
    expected = torch.stack(
        [attn.to_v(hidden[:, window_frames(i, window)] + pe[:window]).mean(dim=1) for i in range(5)], dim=1
    )
    torch.testing.assert_close(PositionCorrectedWindowAttention(window)(attn, hidden, pe), expected)


@pytest.mark.parametrize("window_length", [None, 3])
def test_future_frames_do_not_reach_earlier_outputs(window_length):
    attn = make_attention()
    hidden = torch.randn(4, 6, 8, dtype=torch.float64)
    changed = hidden.clone()
    changed[:, 4] += torch.randn(4, 8, dtype=torch.float64)
    windowed = PositionCorrectedWindowAttention(window_length)
    with torch.no_grad():
        before, after = attn(hidden, windowed), attn(changed, windowed)
        global_before, global_after = attn(hidden), attn(changed)
    torch.testing.assert_close(after[:, :4], before[:, :4], rtol=0, atol=1e-13)
    assert (after[:, 4:] - before[:, 4:]).abs().amin(dim=-1).gt(0).all()
    assert (global_after[:, :4] - global_before[:, :4]).abs().max() > 1e-3


def test_window_slides_past_old_frames():
    attn = make_attention()
    hidden = torch.randn(2, 6, 8, dtype=torch.float64)
    changed = hidden.clone()
    changed[:, 1] += 1.0
    windowed = PositionCorrectedWindowAttention(3)
    with torch.no_grad():
        before, after = attn(hidden, windowed), attn(changed, windowed)
    torch.testing.assert_close(after[:, 4:], before[:, 4:], rtol=0, atol=1e-13)  # frames 4, 5 see 2..5 only
    assert (after[:, 1:4] - before[:, 1:4]).abs().amax(dim=-1).gt(1e-6).all()


def test_float32_close_to_float64():
    attn = make_attention(channels=32, heads=4)
    hidden = torch.randn(9, 8, 32, dtype=torch.float64)
    pe = torch.randn(8, 32, dtype=torch.float64)
    expected = naive_window_attention(attn, hidden, pe, 8)
    got = PositionCorrectedWindowAttention()(attn.float(), hidden.float(), pe.float())
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-5)


def test_window_longer_than_video_names_the_input():
    attn = make_attention()
    with pytest.raises(Pix2GifInputError, match=r"window_length 7 .* \(6 frames\)"):
        PositionCorrectedWindowAttention(7)(attn, torch.randn(2, 6, 8, dtype=torch.float64), torch.zeros(6, 8))


@pytest.mark.parametrize("window_length", [1, 0, True, 2.5])
def test_window_length_must_be_a_whole_number_of_at_least_two(window_length):
    with pytest.raises(Pix2GifInputError, match="window_length"):
        PositionCorrectedWindowAttention(window_length)


def test_gradients_match_reference():
    attn = make_attention()
    hidden = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    pe = torch.randn(5, 8, dtype=torch.float64)
    weights = torch.randn(3, 5, 8, dtype=torch.float64)
    (got,) = torch.autograd.grad((PositionCorrectedWindowAttention(3)(attn, hidden, pe) * weights).sum(), hidden)
    (expected,) = torch.autograd.grad((naive_window_attention(attn, hidden, pe, 3) * weights).sum(), hidden)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("frames", [1, 5])
def test_last_frame_of_a_full_window_equals_global_attention(frames):
    """With W = F the last frame's window is every frame at its own position and its query carries its own PE."""
    attn = make_attention()
    hidden = torch.randn(3, frames, 8, dtype=torch.float64)
    with torch.no_grad():
        windowed, global_ = attn(hidden, PositionCorrectedWindowAttention()), attn(hidden)
    torch.testing.assert_close(windowed[:, -1], global_[:, -1])
    if frames > 1:
        assert (windowed[:, 0] - global_[:, 0]).abs().max() > 1e-3
