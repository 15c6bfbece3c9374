"""AnimateZero window attention against a naive reference written from the paper's formula (methods.md §3.3):
per query frame the window is built explicitly – frame 1 in the first slot, then the frames up to the query
(padded with copies of frame 1 while there are fewer), slot j at position p_j, the query at p_{W−1} – and
attended with an explicit softmax, in float64 loops; nothing of the implementation is reused."""
from __future__ import annotations

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatediff.motion_module import TemporalSelfAttention
from pix2gif_core.attention import sdpa_attention
from pix2gif_core.animatezero.window_attention import PositionCorrectedWindowAttention, attend_window


def make_attention(channels: int = 8, heads: int = 2, key_scale: float = 1.0) -> TemporalSelfAttention:
    torch.manual_seed(0)
    attn = TemporalSelfAttention(channels, pe_length=32, heads=heads).double()
    attn.key_scale = key_scale
    return attn


def window_frames(i: int, window: int) -> list[int]:
    """0-based frames in the window of query frame i: the first frame, then the W−1 frames up to i; while i < W−1
    the first frame is repeated to fill the window ((W−1−i) copies, then frames 0..i)."""
    if i + 1 >= window:
        return [0] + list(range(i - window + 2, i + 1))
    return [0] * (window - 1 - i) + list(range(i + 1))


def naive_window_attention(attn: TemporalSelfAttention, hidden: torch.Tensor, pe: torch.Tensor, window: int):
    """Per query frame and head: materialise the window, add p_0..p_{W−1}, query + p_{W−1}, explicit softmax."""
    sequences, frames, channels = hidden.shape
    heads, head_dim = attn.heads, channels // attn.heads
    scale = attn.key_scale / head_dim**0.5
    weight_q, weight_k, weight_v = (w.double() for w in (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight))
    hidden, pe = hidden.double(), pe.double()
    out = torch.empty(sequences, frames, channels, dtype=torch.float64)
    for i in range(frames):
        tokens = hidden[:, window_frames(i, window)] + pe[:window]  # (N, W, C)
        query = (hidden[:, i] + pe[window - 1]) @ weight_q.T  # (N, C)
        keys, values = tokens @ weight_k.T, tokens @ weight_v.T  # (N, W, C)
        for head in range(heads):
            part = slice(head * head_dim, (head + 1) * head_dim)
            logits = (keys[:, :, part] @ query[:, part, None])[..., 0] * scale  # (N, W)
            weights = logits.exp() / logits.exp().sum(-1, keepdim=True)
            out[:, i, part] = (weights[:, :, None] * values[:, :, part]).sum(1)
    return out


@pytest.mark.parametrize(
    ("frames", "window_length", "heads"),
    [(6, None, 2), (6, 4, 2), (7, 2, 4), (2, None, 2), (2, 2, 1), (5, 5, 8), (9, 3, 2), (16, 5, 2)],
)
def test_matches_naive_padded_windows(frames, window_length, heads):
    attn = make_attention(channels=16, heads=heads)
    hidden = torch.randn(5, frames, 16, dtype=torch.float64)
    pe = torch.randn(frames, 16, dtype=torch.float64)  # random rows: a wrong PE slot cannot hide
    window = window_length or frames
    expected = naive_window_attention(attn, hidden, pe, window)
    got = PositionCorrectedWindowAttention(window_length)(attn, hidden, pe)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [1, 40_000])
def test_chunked_sequences_with_tail_match_reference(chunk_bytes):
    """One sequence per chunk, and chunks of a few sequences with a shorter tail."""
    attn = make_attention()
    hidden = torch.randn(7, 5, 8, dtype=torch.float64)
    pe = torch.randn(5, 8, dtype=torch.float64)
    variant = PositionCorrectedWindowAttention(window_length=3, chunk_bytes=chunk_bytes)
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


def test_window_forgets_old_frames_but_keeps_the_first():
    attn = make_attention()
    hidden = torch.randn(2, 6, 8, dtype=torch.float64)
    changed = hidden.clone()
    changed[:, 1] += 1.0
    windowed = PositionCorrectedWindowAttention(3)
    with torch.no_grad():
        before, after = attn(hidden, windowed), attn(changed, windowed)
    torch.testing.assert_close(after[:, 3:], before[:, 3:], rtol=0, atol=1e-13)  # frames 3..5 see 0 and i−1, i
    assert (after[:, 1:3] - before[:, 1:3]).abs().amax(dim=-1).gt(1e-6).all()


@pytest.mark.parametrize("frames", [2, 5, 8])
def test_first_frame_contributes_to_every_frame_for_every_window_length(frames):
    """The paper's window always holds the first frame: changing frame 1 changes every output frame, for every
    window length, and the outputs equal the reference."""
    attn = make_attention()
    hidden = torch.randn(3, frames, 8, dtype=torch.float64)
    pe = torch.randn(frames, 8, dtype=torch.float64)
    changed = hidden.clone()
    changed[:, 0] += torch.randn(3, 8, dtype=torch.float64)
    for window in range(2, frames + 1):
        variant = PositionCorrectedWindowAttention(window)
        with torch.no_grad():
            before, after = variant(attn, hidden, pe), variant(attn, changed, pe)
        torch.testing.assert_close(before, naive_window_attention(attn, hidden, pe, window))
        torch.testing.assert_close(after, naive_window_attention(attn, changed, pe, window))
        assert (after - before).abs().amax(dim=-1).gt(1e-6).all(), f"window {window}: a frame lost frame 1"


def test_the_attention_kernel_is_called_once_per_chunk_with_the_same_numbers():
    attn = make_attention()
    hidden = torch.randn(7, 5, 8, dtype=torch.float64)
    pe = torch.randn(5, 8, dtype=torch.float64)
    calls = []

    def kernel(q, k, v, mask=None):
        calls.append(q.shape)
        return sdpa_attention(q, k, v, mask)

    got = PositionCorrectedWindowAttention(3, kernel=kernel, chunk_bytes=1)(attn, hidden, pe)
    assert len(calls) == 7 and all(shape[:2] == (1, attn.heads) for shape in calls)
    torch.testing.assert_close(got, PositionCorrectedWindowAttention(3)(attn, hidden, pe), rtol=0, atol=0)
    torch.testing.assert_close(got, naive_window_attention(attn, hidden, pe, 3))


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
