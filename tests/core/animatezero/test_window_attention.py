"""AnimateZero window attention against a naive reference written from the paper's formula (methods.md §3.3):
per query frame the window is built explicitly – frame 1 in the first slot, then the frames up to the query
(padded with copies of frame 1 while there are fewer), slot j at position p_j, the query at p_{W−1} – and
attended with an explicit softmax, in float64 loops; nothing of the implementation is reused."""
from __future__ import annotations

import functools

import pytest
import torch

from pix2gif_core.errors import Pix2GifInputError
from pix2gif_core.animatediff.motion_module import TemporalSelfAttention
from pix2gif_core.attention import sdpa_attention
from pix2gif_core.animatediff.motion_module import global_temporal_attention
from pix2gif_core.animatezero import window_attention
from pix2gif_core.animatezero.window_attention import PositionCorrectedWindowAttention


@pytest.fixture(autouse=True, params=[False, True], ids=["decomposed", "fused"])
def window_path(request, monkeypatch):
    """Every test runs on the decomposed (CPU default) and the fused (accelerator) path."""
    monkeypatch.setitem(globals(), "PositionCorrectedWindowAttention",
                        functools.partial(window_attention.PositionCorrectedWindowAttention, fused=request.param))
    return request.param


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


@pytest.mark.parametrize(("sequences", "chunk_bytes", "calls_expected"), [(7, 1, 7), (300, None, 1)])
def test_the_fused_path_calls_the_attention_kernel_once_per_chunk(sequences, chunk_bytes, calls_expected):
    """One call per chunk (one chunk by default for 300 small sequences), W + F − 1 keys, no mask; chunks change
    only the GEMMs' rounding (float64: below 1e-14)."""
    attn = make_attention()
    hidden = torch.randn(sequences, 5, 8, dtype=torch.float64)
    pe = torch.randn(5, 8, dtype=torch.float64)
    calls = []

    def kernel(q, k, v, mask=None):
        calls.append((q.shape, k.shape, mask))
        return sdpa_attention(q, k, v, mask)

    got = PositionCorrectedWindowAttention(3, kernel=kernel, chunk_bytes=chunk_bytes, fused=True)(attn, hidden, pe)
    rows = sequences // calls_expected
    assert [(q[:3], k[2], mask) for q, k, mask in calls] == [((rows, attn.heads, 5), 3 + 5 - 1, None)] * calls_expected
    torch.testing.assert_close(got, PositionCorrectedWindowAttention(3)(attn, hidden, pe), rtol=0, atol=1e-14)
    torch.testing.assert_close(got, naive_window_attention(attn, hidden, pe, 3))


@pytest.mark.parametrize(("frames", "window_length", "channels", "heads"),
                         [(8, None, 32, 4), (16, None, 64, 8), (16, 5, 64, 8), (12, 2, 40, 2)])
def test_float32_equals_float64_reference_to_1e_5(frames, window_length, channels, heads):
    """The fused float32 computation against the float64 formula; inputs of unit scale, as after LayerNorm."""
    attn = make_attention(channels=channels, heads=heads)
    hidden = torch.randn(9, frames, channels, dtype=torch.float64)
    pe = torch.randn(frames, channels, dtype=torch.float64)
    expected = naive_window_attention(attn, hidden, pe, window_length or frames)
    got = PositionCorrectedWindowAttention(window_length)(attn.float(), hidden.float(), pe.float())
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=1e-5)


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


def test_one_variant_follows_weight_and_key_scale_changes():
    """The per-layer tables are reused between calls, but an in-place weight change (a LoRA patch), another
    key scale or another frame count gives the new numbers."""
    attn = make_attention()
    hidden = torch.randn(3, 6, 8, dtype=torch.float64)
    pe = torch.randn(6, 8, dtype=torch.float64)
    variant = PositionCorrectedWindowAttention(4)
    with torch.no_grad():
        variant(attn, hidden, pe)
        attn.to_k.weight.mul_(1.5)
        torch.testing.assert_close(variant(attn, hidden, pe), naive_window_attention(attn, hidden, pe, 4))
        attn.key_scale = 0.7
        torch.testing.assert_close(variant(attn, hidden, pe), naive_window_attention(attn, hidden, pe, 4))
        torch.testing.assert_close(variant(attn, hidden[:, :5], pe[:5]),
                                   naive_window_attention(attn, hidden[:, :5], pe[:5], 4))


# ops that move no data (views, allocations, dispatch wrappers); everything else the profiler records is a kernel
NOT_KERNELS = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::_unsafe_view", "aten::transpose", "aten::permute",
    "aten::t", "aten::expand", "aten::as_strided", "aten::select", "aten::slice", "aten::unsqueeze", "aten::squeeze",
    "aten::alias", "aten::detach", "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::resolve_conj",
    "aten::resolve_neg", "aten::linear", "aten::matmul", "aten::scaled_dot_product_attention", "aten::lift_fresh",
    "aten::new_empty", "aten::narrow", "aten::to", "aten::contiguous", "aten::diagonal", "aten::unflatten",
}


def kernels_of(run) -> list[str]:
    """aten ops of one ``run()`` (after a warm-up) that launch work: not in NOT_KERNELS and not calling another
    op that does (a composite op is counted through its parts)."""
    from torch.profiler import profile

    run()
    with profile() as prof:
        run()
    events = [event for event in prof.events() if event.name.startswith("aten::")]
    return [event.name for event in events if event.name not in NOT_KERNELS and not any(
        child.name.startswith("aten::") and child.name not in NOT_KERNELS for child in event.cpu_children)]


@pytest.mark.parametrize(("frames", "window_length"), [(16, None), (16, 6), (8, 2)])
def test_kernel_count_at_most_twice_global_attention(frames, window_length):
    attn = TemporalSelfAttention(64, pe_length=32, heads=8)
    hidden = torch.randn(32, frames, 64)
    pe = attn.position_encoding(frames, hidden)
    variant = PositionCorrectedWindowAttention(window_length, fused=True)
    with torch.no_grad():
        global_kernels = kernels_of(lambda: global_temporal_attention(attn, hidden, pe))
        window_kernels = kernels_of(lambda: variant(attn, hidden, pe))
    assert global_kernels.count("aten::_scaled_dot_product_flash_attention_for_cpu") == 1
    assert window_kernels.count("aten::_scaled_dot_product_flash_attention_for_cpu") == 1
    assert len(window_kernels) <= 2 * len(global_kernels), (window_kernels, global_kernels)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_close_to_the_reference(dtype):
    """Tables and widened heads in half precision (the accelerator dtypes): the outside-window logit still
    vanishes and the result stays within half-precision rounding of the float64 formula."""
    attn = make_attention(channels=32, heads=4)
    hidden = torch.randn(6, 8, 32, dtype=torch.float64)
    pe = torch.randn(8, 32, dtype=torch.float64)
    expected = naive_window_attention(attn, hidden, pe, 5)
    with torch.no_grad():
        got = PositionCorrectedWindowAttention(5)(attn.to(dtype), hidden.to(dtype), pe.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=0.01 if dtype == torch.float16 else 0.05)


def test_inference_mode_weights_replaced_as_comfyui_patches_them_give_the_new_numbers():
    """ComfyUI runs under torch.inference_mode and patches a weight by putting a new tensor in its place."""
    with torch.inference_mode():
        attn = make_attention()
        hidden = torch.randn(3, 6, 8, dtype=torch.float64)
        pe = torch.randn(6, 8, dtype=torch.float64)
        variant = PositionCorrectedWindowAttention(4)
        variant(attn, hidden, pe)
        attn.to_q.weight = torch.nn.Parameter(attn.to_q.weight * 1.5, requires_grad=False)
        got = variant(attn, hidden, pe)
    torch.testing.assert_close(got, naive_window_attention(attn, hidden, pe, 4))


@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_per_sequence_key_scales_are_each_sequence_at_that_key_scale(chunk_bytes):
    """``key_scale_map`` (a motion scale per token sequence, e.g. Regional Motion's soft mask): sequence n equals
    the naive window attention at key scale ``s_n`` (0: the window slots averaged), across chunk boundaries."""
    attn = make_attention()
    hidden = torch.randn(6, 5, 8, dtype=torch.float64)
    pe = torch.randn(5, 8, dtype=torch.float64)
    scales = torch.tensor([0.0, 0.5, 1.0, 1.7, 0.0, 1.0], dtype=torch.float64)
    attn.key_scale_map = scales[:, None, None]
    got = PositionCorrectedWindowAttention(3, chunk_bytes=chunk_bytes)(attn, hidden, pe)
    attn.key_scale_map = None
    for n, scale in enumerate(scales.tolist()):
        attn.key_scale = scale
        torch.testing.assert_close(got[n:n + 1], naive_window_attention(attn, hidden[n:n + 1], pe, 3))
    attn.key_scale = 1.0
    assert (got[0] - PositionCorrectedWindowAttention(3)(attn, hidden, pe)[0]).abs().max() > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float16, 0.01), (torch.bfloat16, 0.05)])
def test_on_cuda_close_to_the_reference(dtype, atol):
    """The accelerator's own kernels (SDPA's CUDA back-ends, cuBLAS) on the float64 formula's inputs."""
    attn = make_attention(channels=64, heads=8)
    hidden = torch.randn(9, 16, 64, dtype=torch.float64)
    pe = torch.randn(16, 64, dtype=torch.float64)
    expected = naive_window_attention(attn, hidden, pe, 5)
    with torch.no_grad():
        got = PositionCorrectedWindowAttention(5)(attn.to("cuda", dtype), hidden.to("cuda", dtype),
                                                  pe.to("cuda", dtype))
    assert got.is_cuda and got.dtype == dtype
    torch.testing.assert_close(got.double().cpu(), expected, rtol=0, atol=atol)
